#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver and etcd) from source,
# fetching everything through the Go module proxy, into bin/controlplane/.
#
# Usage: hack/controlplane/build.sh [--force]
#
# Rebuilds only when a binary is missing or bin/controlplane/.stamp does not
# match the pinned versions and the hashes of this module's inputs.
# CONTROLPLANE_BIN_DIR overrides the output directory.
set -euo pipefail

MODULE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${MODULE_DIR}/../.." && pwd)"
OUT_DIR="${CONTROLPLANE_BIN_DIR:-${REPO_ROOT}/bin/controlplane}"
STAMP="${OUT_DIR}/.stamp"

force=0
for arg in "$@"; do
	case "${arg}" in
	--force | -f) force=1 ;;
	-h | --help)
		sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "build.sh: unknown argument: ${arg} (usage: $0 [--force])" >&2
		exit 2
		;;
	esac
done

log() { echo "controlplane: $*" >&2; }

fail() {
	cat >&2 <<EOF

controlplane: ERROR: $*
controlplane: What to do:
  - Read the go output above; the first error line names the real problem.
  - Module downloads need the Go module proxy (GOPROXY=$(go env GOPROXY 2>/dev/null || echo '?')).
    Check it is reachable, then rerun: hack/controlplane/build.sh
  - The build needs Go >= ${GO_MIN:-1.26}, ~5 GiB of disk for the module and build caches
    ($(go env GOMODCACHE 2>/dev/null || echo GOMODCACHE), $(go env GOCACHE 2>/dev/null || echo GOCACHE)), and ~3 GiB of RAM to link.
  - After changing hack/controlplane/go.mod run 'go mod tidy' in hack/controlplane.
  - To start over: rm -rf ${OUT_DIR} && hack/controlplane/build.sh
EOF
	exit 1
}

# --- versions pinned in go.mod (read without touching the network) ---------
mod_version() {
	awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "${MODULE_DIR}/go.mod"
}
K8S_VERSION="$(mod_version k8s.io/kubernetes)"
ETCD_VERSION="$(mod_version go.etcd.io/etcd/server/v3)"
[[ -n "${K8S_VERSION}" && -n "${ETCD_VERSION}" ]] ||
	fail "could not read the k8s.io/kubernetes / go.etcd.io/etcd/server/v3 versions from ${MODULE_DIR}/go.mod"

command -v go >/dev/null 2>&1 || fail "'go' is not on PATH; install Go ${GO_MIN:-1.26} or newer"
GO_MIN="$(awk '$1 == "go" { print $2; exit }' "${MODULE_DIR}/go.mod")"

hash_inputs() {
	(
		cd "${MODULE_DIR}"
		sha256sum go.mod go.sum tools.go etcd/main.go build.sh
	)
}

goos="$(go env GOOS)"
goarch="$(go env GOARCH)"
want_stamp="$(
	echo "k8s.io/kubernetes ${K8S_VERSION}"
	echo "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
	echo "platform ${goos}/${goarch}"
	hash_inputs
)"

if [[ ${force} -eq 0 && -x "${OUT_DIR}/kube-apiserver" && -x "${OUT_DIR}/etcd" && -f "${STAMP}" ]] &&
	[[ "$(cat "${STAMP}")" == "${want_stamp}" ]]; then
	log "kube-apiserver ${K8S_VERSION} and etcd ${ETCD_VERSION} are up to date in ${OUT_DIR}"
	exit 0
fi

# --- toolchain check ---------------------------------------------------------
go_have="$(go env GOVERSION)" # e.g. go1.26.8
ver_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | sed -n 1p)" == "$2" ]]; }
if ! ver_ge "${go_have#go}" "${GO_MIN}"; then
	fail "Go ${go_have#go} is too old: hack/controlplane/go.mod needs go ${GO_MIN} (k8s.io/kubernetes ${K8S_VERSION} requires it)"
fi

# --- build -------------------------------------------------------------------
mkdir -p "${OUT_DIR}" || fail "cannot create ${OUT_DIR}"
rm -f "${STAMP}"
start=$(date +%s)
cd "${MODULE_DIR}"

# Static, pure-Go binaries: faster to build, no C toolchain needed.
export CGO_ENABLED=0
# Never rewrite go.mod/go.sum here; never shell out to git for VCS stamping.
build_flags=(-mod=readonly -buildvcs=false -trimpath)

log "fetching module sources through the Go module proxy (cached after the first run)"
go list -deps k8s.io/kubernetes/cmd/kube-apiserver ./etcd >/dev/null ||
	fail "downloading the modules for kube-apiserver ${K8S_VERSION} / etcd ${ETCD_VERSION} failed"

# Same version variables upstream's hack/lib/version.sh sets. There is no git
# checkout to take a commit or date from, so the build date is the release
# tag's time as recorded by the module proxy, which keeps rebuilds identical.
k8s_minor="${K8S_VERSION#v}"
k8s_major="${k8s_minor%%.*}"
k8s_minor="${k8s_minor#*.}"
k8s_minor="${k8s_minor%%.*}"
build_date="$(go list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes 2>/dev/null || true)"
build_date="${build_date:-1970-01-01T00:00:00Z}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
	ldflags+=" -X ${pkg}.gitMajor=${k8s_major}"
	ldflags+=" -X ${pkg}.gitMinor=${k8s_minor}"
	ldflags+=" -X ${pkg}.gitCommit="
	ldflags+=" -X ${pkg}.gitTreeState=clean"
	ldflags+=" -X ${pkg}.buildDate=${build_date}"
done

log "building etcd ${ETCD_VERSION} from source (~2 min the first time)"
go build "${build_flags[@]}" -ldflags "-s -w" -o "${OUT_DIR}/etcd.tmp" ./etcd ||
	fail "building etcd ${ETCD_VERSION} failed"
mv -f "${OUT_DIR}/etcd.tmp" "${OUT_DIR}/etcd"

log "building kube-apiserver ${K8S_VERSION} from source, first time takes ~10 min on 2 cores"
go build "${build_flags[@]}" -ldflags "${ldflags}" -o "${OUT_DIR}/kube-apiserver.tmp" \
	k8s.io/kubernetes/cmd/kube-apiserver ||
	fail "building kube-apiserver ${K8S_VERSION} failed"
mv -f "${OUT_DIR}/kube-apiserver.tmp" "${OUT_DIR}/kube-apiserver"

got="$("${OUT_DIR}/kube-apiserver" --version 2>&1)" || fail "the built kube-apiserver does not run: ${got}"
[[ "${got}" == "Kubernetes ${K8S_VERSION}" ]] ||
	fail "kube-apiserver --version printed '${got}', expected 'Kubernetes ${K8S_VERSION}'"
"${OUT_DIR}/etcd" --version >/dev/null 2>&1 || fail "the built etcd does not run"

printf '%s\n' "${want_stamp}" >"${STAMP}"
log "done in $(($(date +%s) - start))s: ${OUT_DIR}/kube-apiserver (${got}), ${OUT_DIR}/etcd (${ETCD_VERSION})"
