//! Server certificate: from config, or self-signed once into the state dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

/// How long a self-signed certificate is valid for.
pub const SELF_SIGNED_DAYS: i64 = 730;
/// A self-signed certificate this close to expiry is renewed at start.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// What was put in the self-signed certificate, kept beside it so a start
/// can tell whether it still fits (names) and is not near expiry.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Issued {
    names: Vec<String>,
    /// Unix seconds.
    not_after: i64,
}

/// The names a self-signed certificate must carry: `localhost`,
/// `127.0.0.1`, `::1`, the configured `self_signed_names`, and the listen
/// address when it is a specific one, so the README's own URL verifies
/// with `--cacert`.
pub fn self_signed_names(cfg: &TlsConfig, listen: std::net::SocketAddr) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.to_string())
        .chain(cfg.self_signed_names.iter().cloned())
        .collect();
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.to_ascii_lowercase()));
    names
}

/// The certificate and key in `dir`: made on first start, and made again
/// when they are missing, within [`RENEW_BEFORE_DAYS`] of expiry, or lack
/// one of `names`. Both files are owner-only.
fn generate(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert_path, key_path, meta_path) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("issued.json"),
    );
    let now = time::OffsetDateTime::now_utc();
    let issued: Option<Issued> = std::fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let why = match (&issued, cert_path.exists() && key_path.exists()) {
        (_, false) => Some("none yet".to_string()),
        (None, true) => Some("made by an older version (no record of its names and expiry)".into()),
        (Some(i), true) => {
            let left = (i.not_after - now.unix_timestamp()) / 86_400;
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| !i.names.iter().any(|m| m.eq_ignore_ascii_case(n)))
                .collect();
            if left < RENEW_BEFORE_DAYS {
                Some(format!("it expires in {left} day(s)"))
            } else if !missing.is_empty() {
                Some(format!("it does not name {missing:?}"))
            } else {
                None
            }
        }
    };
    let Some(why) = why else {
        return Ok((cert_path, key_path));
    };
    crate::store::perms::create_dir(dir).map_err(|source| TlsError::Read {
        path: dir.into(),
        source,
    })?;
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(gen)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "argusd self-signed");
    params.not_before = now - time::Duration::days(1);
    let not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    params.not_after = not_after;
    let key = rcgen::KeyPair::generate().map_err(gen)?;
    let cert = params.self_signed(&key).map_err(gen)?;
    let write = |p: &Path, data: &[u8]| -> Result<(), TlsError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::store::perms::FILE_MODE)
            .open(p)
            .map_err(|source| TlsError::Read {
                path: p.into(),
                source,
            })?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .map_err(|source| TlsError::Read {
                path: p.into(),
                source,
            })
    };
    write(&key_path, key.serialize_pem().as_bytes())?;
    write(&cert_path, cert.pem().as_bytes())?;
    let meta = Issued {
        names: names.to_vec(),
        not_after: not_after.unix_timestamp(),
    };
    write(
        &meta_path,
        &serde_json::to_vec(&meta).expect("records serialize"),
    )?;
    tracing::info!(cert = %cert_path.display(), names = ?names, days = SELF_SIGNED_DAYS, reason = %why, "generated a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

pub fn fingerprint(cert: &CertificateDer) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn server_config(
    cfg: &TlsConfig,
    state_dir: &Path,
    listen: std::net::SocketAddr,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = if cfg.cert.as_os_str().is_empty() {
        generate(&state_dir.join("tls"), &self_signed_names(cfg, listen))?
    } else {
        (cfg.cert.clone(), cfg.key.clone())
    };
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut read(&cert_path)?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem {
                path: cert_path.clone(),
                message: e.to_string(),
            })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path,
            message: "no certificate found".into(),
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut read(&key_path)?.as_slice())
        .map_err(|e| TlsError::Pem {
            path: key_path.clone(),
            message: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Pem {
            path: key_path.clone(),
            message: "no private key found".into(),
        })?;
    tracing::info!(cert = %cert_path.display(), sha256 = %fingerprint(&certs[0]), "TLS certificate");
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TlsConfig {
        TlsConfig {
            self_signed_names: vec!["argus.clinic.local".into()],
            ..TlsConfig::default()
        }
    }

    /// The certificate names localhost, both loopback addresses, the
    /// configured name and a specific listen address, and is valid for the
    /// stated time; a start keeps it, and renews it when it nears expiry
    /// or when a required name is missing.
    #[test]
    fn self_signed_certificate_names_validity_and_renewal() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("tls");
        let listen: std::net::SocketAddr = "192.168.7.2:8443".parse().unwrap();
        let names = self_signed_names(&cfg(), listen);
        for n in [
            "localhost",
            "127.0.0.1",
            "::1",
            "argus.clinic.local",
            "192.168.7.2",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
        let (cert, key) = generate(&dir, &names).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for p in [&cert, &key] {
            let m = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, 0o600, "{}", p.display());
        }
        let pem = std::fs::read(&cert).unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap();
        // rustls' own verifier: the certificate is valid for each name now.
        let end = webpki::EndEntityCert::try_from(&der).unwrap();
        for n in ["localhost", "127.0.0.1", "::1", "argus.clinic.local"] {
            let name = rustls::pki_types::ServerName::try_from(n).unwrap();
            end.verify_is_valid_for_subject_name(&name)
                .unwrap_or_else(|e| panic!("{n}: {e:?}"));
        }
        let meta: Issued =
            serde_json::from_slice(&std::fs::read(dir.join("issued.json")).unwrap()).unwrap();
        let days = (meta.not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!(
            (SELF_SIGNED_DAYS - 2..=SELF_SIGNED_DAYS).contains(&days),
            "{days}"
        );
        // Kept as it is on the next start.
        generate(&dir, &names).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), pem);
        // A new required name: renewed.
        let mut more = names.clone();
        more.push("lab.clinic.local".into());
        generate(&dir, &more).unwrap();
        let renamed = std::fs::read(&cert).unwrap();
        assert_ne!(renamed, pem);
        // Near expiry: renewed.
        let soon = Issued {
            names: more.clone(),
            not_after: time::OffsetDateTime::now_utc().unix_timestamp() + 5 * 86_400,
        };
        std::fs::write(dir.join("issued.json"), serde_json::to_vec(&soon).unwrap()).unwrap();
        generate(&dir, &more).unwrap();
        assert_ne!(std::fs::read(&cert).unwrap(), renamed);
    }
}
