//! argusd: parse the command line, set up logging, hand over to the library.

use std::io::IsTerminal;

use clap::Parser;

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARGUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        "json" => true,
        "text" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = argus::cli::Cli::parse();
    if !matches!(cli.command, argus::cli::Command::Serve(_)) {
        // A command whose output is closed (`argusd detect ... | head`) ends
        // quietly, as Unix tools do, instead of panicking on EPIPE. The
        // daemon keeps Rust's ignored SIGPIPE: a client that hangs up is an
        // error to handle, not a reason to exit.
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let log_format = argus::cli::load_config(&cli)
        .map(|c| c.log_format)
        .unwrap_or_else(|_| "auto".into());
    init_tracing(&log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("argusd: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    // GPU devices outlive the runtime: its threads must be gone before a
    // device is destroyed (see `argus::backend::hold_devices_until_exit`).
    argus::backend::hold_devices_until_exit();
    let result = rt.block_on(argus::cli::run_command(cli));
    drop(rt);
    argus::backend::release_held_devices();
    match result {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("argusd: {e}");
            std::process::ExitCode::from(match e {
                argus::cli::CliError::Usage(_) => 2,
                _ => 1,
            })
        }
    }
}
