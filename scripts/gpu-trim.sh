#!/usr/bin/env bash
# Fit a GPU run inside the device tool's carry limit (64 MiB for the working
# tree and the carried paths together): remove from the working tree what
# scripts/gpu-run.sh does not read, and print the `carry` list of bundle
# files the given parts need, with the total. Put the tree back afterwards
# with `scripts/gpu-trim.sh --restore`.
#
#   scripts/gpu-trim.sh e2e,overload     # trim; print the carry for these parts
#   scripts/gpu-trim.sh --restore        # git reset --hard HEAD
#
# The tree must be clean (everything committed): restoring is a hard reset.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=$((64 * 1024 * 1024))

if [ "${1:-}" = --restore ]; then
    git reset -q --hard HEAD
    echo "gpu-trim: tree restored to $(git rev-parse --short HEAD)"
    exit 0
fi
parts=${1:?usage: gpu-trim.sh PARTS (tests,sanitize,model,imaging,cells,skin,e2e,overload,profile,kernels) | --restore}
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "gpu-trim: commit first: --restore is a hard reset" >&2
    exit 1
fi
[ -d .gpu/bin ] || { echo "gpu-trim: no bundle: run scripts/gpu-bundle.sh first" >&2; exit 1; }

# What the runner reads at run time: models, fixtures, the scripts and the
# overload sets. The FHIR schema (a fixture only the FHIR test reads) is the
# largest file that is not needed.
git ls-files -z \
    | grep -z -v -E '^(models/|tests/fixtures/|scripts/|benches/tools/overload_sets\.sh$|\.gitignore$)' \
    | xargs -0 -r git rm -q --
git rm -q --ignore-unmatch tests/fixtures/fhir/fhir.schema.json

bins=()
for part in ${parts//,/ }; do
    case "$part" in
    tests) bins+=(argus http_backends_test skin_test) ;;
    sanitize) bins+=(argus) ;;
    model | kernels) bins+=(model) ;;
    imaging) bins+=(imaging) ;;
    cells) bins+=(cells) ;;
    skin) bins+=(skin) ;;
    e2e | overload | profile) bins+=(argusd load) ;;
    *) echo "gpu-trim: no part $part" >&2 && exit 2 ;;
    esac
done
carry=()
for b in $(printf '%s\n' "${bins[@]}" | sort -u); do
    [ -e ".gpu/bin/$b.xz" ] || { echo "gpu-trim: the bundle has no $b (gpu-bundle.sh all?)" >&2; exit 1; }
    carry+=(".gpu/bin/$b.xz")
done
carry+=(.gpu/gl .gpu/kind .gpu/built_in)

tree=$(git ls-files -z | xargs -0 du -cb | tail -n1 | cut -f1)
extra=$(du -cb "${carry[@]}" | tail -n1 | cut -f1)
total=$((tree + extra))
printf 'gpu-trim: tree %d MiB + carry %d MiB = %d MiB of 64\n' \
    $((tree >> 20)) $((extra >> 20)) $((total >> 20))
printf 'carry: ['
printf '"%s", ' "${carry[@]}" | sed 's/, $//'
printf ']\n'
if [ "$total" -gt "$limit" ]; then
    echo "gpu-trim: over the limit: run fewer parts per call" >&2
    exit 1
fi
