#!/usr/bin/env bash
# Builds kubectl (k8s.io/kubernetes/cmd/kubectl, the version pinned in this
# module's go.mod, the same as kube-apiserver) from source through the Go
# module proxy, into bin/controlplane/kubectl.
#
# Usage: hack/controlplane/build-kubectl.sh [--force]
#
# Rebuilds only when kubectl is missing or bin/controlplane/.kubectl.stamp does
# not match the pinned version and the hashes of this script and go.mod/go.sum.
# CONTROLPLANE_BIN_DIR overrides the output directory.
set -euo pipefail

MODULE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${MODULE_DIR}/../.." && pwd)"
OUT_DIR="${CONTROLPLANE_BIN_DIR:-${REPO_ROOT}/bin/controlplane}"
STAMP="${OUT_DIR}/.kubectl.stamp"

force=0
for arg in "$@"; do
	case "${arg}" in
	--force | -f) force=1 ;;
	-h | --help)
		sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "build-kubectl.sh: unknown argument: ${arg} (usage: $0 [--force])" >&2
		exit 2
		;;
	esac
done

log() { echo "kubectl: $*" >&2; }

fail() {
	cat >&2 <<EOF

kubectl: ERROR: $*
kubectl: What to do:
  - Read the go output above; the first error line names the real problem.
  - Module downloads need the Go module proxy (GOPROXY=$(go env GOPROXY 2>/dev/null || echo '?'))
    and the checksum database (GOSUMDB=$(go env GOSUMDB 2>/dev/null || echo '?')).
    Check they are reachable, then rerun: hack/controlplane/build-kubectl.sh
  - The build needs Go >= ${GO_MIN:-1.26}, ~2 GiB of build cache ($(go env GOCACHE 2>/dev/null || echo GOCACHE))
    and ~1.5 GiB of RAM to link.
  - To start over: rm -f ${OUT_DIR}/kubectl ${STAMP} && hack/controlplane/build-kubectl.sh
EOF
	exit 1
}

# The kubernetes version pinned in go.mod (read without touching the network).
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "${MODULE_DIR}/go.mod")"
[[ -n "${K8S_VERSION}" ]] || fail "could not read the k8s.io/kubernetes version from ${MODULE_DIR}/go.mod"
command -v go >/dev/null 2>&1 || fail "'go' is not on PATH; install Go 1.26 or newer"
GO_MIN="$(awk '$1 == "go" { print $2; exit }' "${MODULE_DIR}/go.mod")"

want_stamp="$(
	echo "k8s.io/kubernetes/cmd/kubectl ${K8S_VERSION}"
	echo "platform $(go env GOOS)/$(go env GOARCH)"
	cd "${MODULE_DIR}" && sha256sum go.mod go.sum build-kubectl.sh
)"

if [[ ${force} -eq 0 && -x "${OUT_DIR}/kubectl" && -f "${STAMP}" ]] &&
	[[ "$(cat "${STAMP}")" == "${want_stamp}" ]]; then
	log "kubectl ${K8S_VERSION} is up to date in ${OUT_DIR}"
	exit 0
fi

go_have="$(go env GOVERSION)"
ver_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | sed -n 1p)" == "$2" ]]; }
ver_ge "${go_have#go}" "${GO_MIN}" ||
	fail "Go ${go_have#go} is too old: hack/controlplane/go.mod needs go ${GO_MIN} (k8s.io/kubernetes ${K8S_VERSION} requires it)"

mkdir -p "${OUT_DIR}" || fail "cannot create ${OUT_DIR}"
rm -f "${STAMP}"
start=$(date +%s)
cd "${MODULE_DIR}"
export CGO_ENABLED=0

# kubectl needs modules that kube-apiserver does not (k8s.io/cli-runtime,
# kustomize, ...), so this module's go.sum cannot build it as it is. Adding
# them to go.mod/go.sum would change build.sh's stamp and rebuild
# kube-apiserver and etcd everywhere. Instead, build from a copy of go.mod
# and go.sum (go's -modfile) completed with kubectl's requirements. The
# versions come from the same graph (k8s.io/kubernetes's go.mod and the
# replace block), the checksums are verified by the checksum database, and
# the check below makes sure no version that kube-apiserver is built with
# moved.
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
cp go.mod "${work}/kubectl.mod"
cp go.sum "${work}/kubectl.sum"
modfile=(-modfile="${work}/kubectl.mod")

log "resolving kubectl's modules through the Go module proxy (cached after the first run)"
go get "${modfile[@]}" "k8s.io/kubernetes/cmd/kubectl@${K8S_VERSION}" ||
	fail "resolving the modules of kubectl ${K8S_VERSION} failed"
versions() { go list -mod=readonly "$@" -m -f '{{.Path}} {{with .Replace}}{{.Version}}{{else}}{{.Version}}{{end}}' all | LC_ALL=C sort -k1,1; }
moved="$(LC_ALL=C join -j1 -o 1.1,1.2,2.2 <(versions) <(versions "${modfile[@]}") | awk '$2 != $3')"
[[ -z "${moved}" ]] ||
	fail "building kubectl would change these module versions from go.mod (module, go.mod, kubectl):
${moved}"

# Same version variables upstream's hack/lib/version.sh sets, as build.sh
# does for kube-apiserver: `kubectl version --client` prints the real version.
k8s_minor="${K8S_VERSION#v}"
k8s_major="${k8s_minor%%.*}"
k8s_minor="${k8s_minor#*.}"
k8s_minor="${k8s_minor%%.*}"
build_date="$(go list -mod=readonly -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes 2>/dev/null || true)"
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

log "building kubectl ${K8S_VERSION} from source (a few minutes the first time on 2 cores)"
go build -mod=readonly "${modfile[@]}" -buildvcs=false -trimpath -ldflags "${ldflags}" \
	-o "${OUT_DIR}/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl ||
	fail "building kubectl ${K8S_VERSION} failed"
mv -f "${OUT_DIR}/kubectl.tmp" "${OUT_DIR}/kubectl"

# Capture the whole output first, then take its first line: piping into
# `head -n1` under pipefail fails whenever kubectl writes its second line
# after head has exited (SIGPIPE), which a fresh machine hit.
out="$("${OUT_DIR}/kubectl" version --client 2>&1)" || fail "the built kubectl does not run: ${out}"
got="${out%%$'\n'*}"
[[ "${got}" == "Client Version: ${K8S_VERSION}" ]] ||
	fail "kubectl version --client printed '${got}', expected 'Client Version: ${K8S_VERSION}'"

printf '%s\n' "${want_stamp}" >"${STAMP}"
log "done in $(($(date +%s) - start))s: ${OUT_DIR}/kubectl (${got})"
