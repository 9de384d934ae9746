#!/usr/bin/env bash
# Builds promtool (and, with --prometheus, the Prometheus server) from
# source, fetching everything through the Go module proxy, at the version of
# github.com/prometheus/prometheus that monitoring/go.mod pins (the module
# whose tests parse leasehold's PromQL), into bin/prometheus/.
#
# Usage: hack/prometheus/build.sh [--prometheus] [--force]
#
# Rebuilds a binary only when it is missing or bin/prometheus/.stamp-<name>
# does not match the pinned version and the hashes of monitoring/go.mod,
# monitoring/go.sum and this script. PROMETHEUS_BIN_DIR overrides the
# output directory. Both are built with -tags remove_all_sd: no service
# discovery plugins (the demo scrapes static targets), about half the code
# to compile. The server's web UI is not embedded (that needs the
# builtinassets tag and a Node.js build of its assets); its HTTP API, which
# the scenario and the plot read, is all there.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
MODULE_DIR="${REPO_ROOT}/monitoring"
OUT_DIR="${PROMETHEUS_BIN_DIR:-${REPO_ROOT}/bin/prometheus}"

force=0
targets=(promtool)
for arg in "$@"; do
	case "${arg}" in
	--force | -f) force=1 ;;
	--prometheus) targets+=(prometheus) ;;
	-h | --help)
		sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "build.sh: unknown argument: ${arg} (usage: $0 [--prometheus] [--force])" >&2
		exit 2
		;;
	esac
done

log() { echo "prometheus: $*" >&2; }

fail() {
	cat >&2 <<EOF

prometheus: ERROR: $*
prometheus: What to do:
  - Read the go output above; the first error line names the real problem.
  - Module downloads need the Go module proxy (GOPROXY=$(go env GOPROXY 2>/dev/null || echo '?')).
    Check it is reachable, then rerun: hack/prometheus/build.sh
  - After changing monitoring/go.mod run 'go mod tidy' in monitoring (tools.go keeps
    cmd/promtool and cmd/prometheus in its go.sum).
  - To start over: rm -rf ${OUT_DIR} && hack/prometheus/build.sh
EOF
	exit 1
}

command -v go >/dev/null 2>&1 || fail "'go' is not on PATH"
VERSION="$(awk '$1 == "github.com/prometheus/prometheus" && $2 ~ /^v/ { print $2; exit }' "${MODULE_DIR}/go.mod")"
[[ -n "${VERSION}" ]] || fail "could not read the github.com/prometheus/prometheus version from ${MODULE_DIR}/go.mod"

# Module v0.MMM.P is Prometheus 3.(MMM-300).P (v0.316.0 is 3.16.0).
minor="${VERSION#v0.}"
patch="${minor#*.}"
minor="${minor%%.*}"
RELEASE="$((minor / 100)).$((minor % 100)).${patch}"

want_stamp() {
	echo "github.com/prometheus/prometheus ${VERSION} ($1, Prometheus ${RELEASE})"
	echo "platform $(go env GOOS)/$(go env GOARCH)"
	(cd "${MODULE_DIR}" && sha256sum go.mod go.sum)
	sha256sum "${BASH_SOURCE[0]}" | awk '{ print $1 "  build.sh" }'
}

build_date="$(cd "${MODULE_DIR}" && go list -m -f '{{with .Time}}{{.UTC.Format "20060102-15:04:05"}}{{end}}' github.com/prometheus/prometheus 2>/dev/null || true)"
ldflags="-s -w"
for kv in "Version=${RELEASE}" "Revision=${VERSION}" "Branch=" "BuildUser=leasehold" "BuildDate=${build_date}"; do
	ldflags+=" -X github.com/prometheus/common/version.${kv}"
done

mkdir -p "${OUT_DIR}" || fail "cannot create ${OUT_DIR}"
export CGO_ENABLED=0
for name in "${targets[@]}"; do
	stamp="${OUT_DIR}/.stamp-${name}"
	want="$(want_stamp "${name}")"
	if [[ ${force} -eq 0 && -x "${OUT_DIR}/${name}" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
		log "${name} ${RELEASE} is up to date in ${OUT_DIR}"
		continue
	fi
	rm -f "${stamp}"
	start=$(date +%s)
	log "building ${name} ${RELEASE} (${VERSION}) from source (a few minutes the first time)"
	(cd "${MODULE_DIR}" && go build -mod=readonly -buildvcs=false -trimpath -tags remove_all_sd \
		-ldflags "${ldflags}" -o "${OUT_DIR}/${name}.tmp" "github.com/prometheus/prometheus/cmd/${name}") ||
		fail "building ${name} ${VERSION} failed"
	mv -f "${OUT_DIR}/${name}.tmp" "${OUT_DIR}/${name}"
	got="$("${OUT_DIR}/${name}" --version 2>&1 | head -1)" || fail "the built ${name} does not run: ${got}"
	[[ "${got}" == *"version ${RELEASE}"* ]] || fail "${name} --version printed '${got}', expected version ${RELEASE}"
	printf '%s\n' "${want}" >"${stamp}"
	log "built ${name} in $(($(date +%s) - start))s: ${got}"
done
