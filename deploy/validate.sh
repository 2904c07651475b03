#!/usr/bin/env bash
# Validates every Kubernetes manifest under deploy/kubernetes against the
# official schemas (kubernetes-validate from PyPI, strict mode, in a
# virtualenv). Custom resources it has no schema for are listed and skipped
# explicitly; kustomization.yaml files are kustomize's, not the cluster's.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${SCOPEGATE_VALIDATE_VENV:-target/kubernetes-validate-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kubernetes-validate
fi

# CRDs (no schema in kubernetes-validate): skipped, and said so.
crds=(
  deploy/kubernetes/forward-auth/traefik-middleware.yaml
  deploy/kubernetes/forward-auth/envoy-gateway.yaml
  deploy/kubernetes/forward-auth/envoy-gateway-grpc.yaml
  deploy/kubernetes/forward-auth/istio-authorization-policy.yaml
  deploy/kubernetes/forward-auth/gateway-api-external-auth.yaml
)

passed=0
failed=0
skipped=0
while IFS= read -r file; do
  case " ${crds[*]} " in
    *" $file "*)
      echo "SKIP (custom resource, no schema): $file"
      skipped=$((skipped + 1))
      continue
      ;;
  esac
  if "$venv/bin/kubernetes-validate" --strict --quiet "$file"; then
    echo "ok: $file"
    passed=$((passed + 1))
  else
    echo "INVALID: $file"
    failed=$((failed + 1))
  fi
done < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)

echo "manifests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
