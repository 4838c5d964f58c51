#!/usr/bin/env bash
# Validates deploy/kubernetes offline (issue 24): every manifest against a current Kubernetes
# schema with kubernetes-validate (strict: unknown fields are errors), and all of them with checkov
# (Kubernetes framework); a failed checkov check fails the script unless it is skipped with a
# `checkov.io/skipN` annotation that says why. Both tools come from PyPI into a virtual environment at
# .build-validate/venv (created on first use; nothing is installed system-wide).
#
# Usage: scripts/kubernetes-check.sh [--kubernetes VERSION]
#   scripts/kubernetes-check.sh                       # Kubernetes schema 1.37.0
#   scripts/kubernetes-check.sh --kubernetes 1.33.0   # another schema version
#   scripts/kubernetes-check.sh --help
#
# Needs python3 with venv, and PyPI reachable on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

kubernetes_version=1.37.0
while [ $# -gt 0 ]; do
    case "$1" in
        --kubernetes) [ $# -ge 2 ] || { echo "kubernetes-check.sh: --kubernetes needs a version" >&2; exit 2; }; kubernetes_version=$2; shift ;;
        --kubernetes=*) kubernetes_version=${1#--kubernetes=} ;;
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "kubernetes-check.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

venv=.build-validate/venv
step() { printf '=== %s\n' "$*"; }
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/checkov" ]; then
    step "installing kubernetes-validate and checkov from PyPI into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate checkov
fi

manifests=()
for file in deploy/kubernetes/*.yaml; do
    # The kustomization is kustomize's own configuration, not a Kubernetes resource.
    [ "$(basename "$file")" = kustomization.yaml ] || manifests+=("$file")
done
[ ${#manifests[@]} -gt 0 ] || { echo "kubernetes-check.sh: no manifests in deploy/kubernetes" >&2; exit 1; }

step "kubernetes-validate --strict, Kubernetes $kubernetes_version: ${manifests[*]}"
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "$kubernetes_version" "${manifests[@]}"

step "kustomization.yaml lists every manifest"
for file in "${manifests[@]}"; do
    grep -qE "^  - $(basename "$file")\$" deploy/kubernetes/kustomization.yaml \
        || { echo "kubernetes-check.sh: $(basename "$file") is not in kustomization.yaml" >&2; exit 1; }
done
echo "ok"

step "checkov --framework kubernetes (skips only where an annotation says why)"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
"$venv/bin/checkov" --framework kubernetes --directory deploy/kubernetes --output json >"$report" 2>/dev/null || status=$?
"$venv/bin/python3" - "$report" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
for run in data if isinstance(data, list) else [data]:
    summary = run.get("summary", {})
    print(f"checkov ({run.get('check_type')}): passed {summary.get('passed')}, failed {summary.get('failed')}, skipped {summary.get('skipped')}")
    for check in run.get("results", {}).get("skipped_checks", []):
        print(f"  skipped {check['check_id']} ({check['file_path']}; the reason is in its checkov.io/skip annotation)")
    for check in run.get("results", {}).get("failed_checks", []):
        print(f"  FAILED {check['check_id']} {check['check_name']} ({check['file_path']})")
PY
exit "$status"
