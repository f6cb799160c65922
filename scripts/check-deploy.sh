#!/usr/bin/env bash
# Deployment checks, offline (no AWS account, no Docker):
#   1. cfn-lint template.yaml
#   2. cfn-lint on the SAM-transformed template: the AWS::Serverless resources expanded into what CloudFormation
#      deploys. Circular dependencies (E3004) between generated resources show only there.
#   3. sam validate --lint
#   4. the environment: every IMGPIPE_* variable the template sets is a Config field (core/src/config.rs), every
#      Config field is named in the template (set, or listed as left at its default), and `sam local` with
#      env.local.json gives each function a non-empty value for every variable (resolved by SAM CLI's own code)
#   5. the output URLs (OutputUrls, scripts/check_output_urls.py): with `cloudfront` a distribution with origin
#      access control in front of the private outputs bucket, readable by that distribution alone (AWS:SourceArn),
#      its domain the functions' IMGPIPE_OUTPUT_BASE_URL; with `custom` the user's OutputBaseUrl and no
#      distribution; with `presigned` neither
#   6. the five functions resolve the same features for every dependency they share, so that sam build's
#      per-function cargo builds (one `cargo lambda build` in each function's directory, each resolving features
#      for its own package only) compile the dependency tree once, not once per distinct feature set
#   7. sam build with Architecture=x86_64 (cargo-lambda, BuildMethod rust-cargolambda), then a bootstrap per
#      function: an x86-64 ELF executable in .aws-sam/build/<Function>/; each function's build time is printed.
# The tools come from PyPI into the git-ignored .stack/deploy-venv (pinned; installed once). cargo-lambda's zig comes
# with it (the ziglang package). The build reuses the workspace's target/ (aws-lambda-builders points cargo at the
# workspace target directory; set CARGO_TARGET_DIR to use another).
# arm64 stays the deploy default, but its Rust std (aarch64-unknown-linux-gnu) cannot be installed here: CI builds
# x86_64, which checks the same template, build method and code.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

SAM_CLI_VERSION="1.170.0"
CFN_LINT_VERSION="1.58.0"
CARGO_LAMBDA_VERSION="1.9.2"
VENV="$ROOT/.stack/deploy-venv"
CHECK_DIR="$ROOT/.aws-sam/check"
FUNCTIONS=(UploadFunction WorkerFunction StatusFunction SweeperFunction WebhookFunction)

export PATH="$VENV/bin:$PATH"
export SAM_CLI_TELEMETRY=0
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

log() { printf '[check-deploy] %s\n' "$*"; }
die() { printf '[check-deploy] FAILED: %s\n' "$*" >&2; exit 1; }

step() { # NAME CMD...: runs CMD, printing its duration
  local name="$1" t0=$SECONDS
  shift
  log "== $name"
  "$@"
  log "   ok: $name ($((SECONDS - t0)) s)"
}

install_tools() {
  local want="aws-sam-cli==$SAM_CLI_VERSION cfn-lint==$CFN_LINT_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION"
  local stamp="$VENV/.installed"
  if [[ -x "$VENV/bin/sam" && -x "$VENV/bin/cargo-lambda" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "tools present: $want"
    return
  fi
  log "installing $want into $VENV"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $want
  printf '%s' "$want" >"$stamp"
}

lint_template() {
  cfn-lint template.yaml
}

lint_transformed() {
  mkdir -p "$CHECK_DIR"
  "$VENV/bin/python" - template.yaml "$CHECK_DIR/transformed.json" <<'PY'
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:  # the template names managed policies by ARN only: nothing to look up
    def load(self):
        return {}

template = yaml_parse(open(sys.argv[1]).read())
for resource in template["Resources"].values():
    if resource.get("Type") == "AWS::Serverless::Function":
        resource["Properties"]["CodeUri"] = "s3://bucket/key"  # what `sam package` puts there
json.dump(transform(template, {}, NoManagedPolicies()), open(sys.argv[2], "w"), indent=1, default=str)
PY
  cfn-lint "$CHECK_DIR/transformed.json"
}

validate() {
  sam validate --lint
}

check_environment() {
  "$VENV/bin/python" - <<'PY'
import json, re, sys
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.commands.local.lib.local_lambda import LocalLambdaRunner

errors = []
source = open("core/src/config.rs").read()
body = re.search(r"pub struct Config \{(.*?)\n\}", source, re.S).group(1)
# Fields after `#[serde(skip)]` are not read from IMGPIPE_* variables (e.g. Lambda's own memory size).
skipped = set(re.findall(r"#\[serde\(skip\)\]\s*(?:///[^\n]*\n\s*)*pub (\w+):", body))
fields = {"IMGPIPE_" + name.upper() for name in re.findall(r"^\s*pub (\w+):", body, re.M) if name not in skipped}
template = open("template.yaml").read()
set_in_template = set(re.findall(r"^\s+(IMGPIPE_[A-Z0-9_]+):", template, re.M))
for name in sorted(set_in_template - fields):
    errors.append(f"template.yaml sets {name}, which is no Config field (core/src/config.rs)")
listed = set_in_template | {"IMGPIPE_" + n for n in re.findall(r"\b([A-Z][A-Z0-9_]+)\b", template)}
for name in sorted(fields - listed):
    errors.append(f"{name} (core/src/config.rs) is neither set nor listed in template.yaml's header comment")

# What `sam local start-api --env-vars env.local.json` hands each function. SAM CLI passes only the variables the
# template declares, and turns an `!If [.., .., !Ref AWS::NoValue]` variable into "" (the code would read "" as a
# value), so env.local.json must give each of them a real value.
stacks, _ = SamLocalStackProvider.get_stacks(
    "template.yaml",
    parameter_overrides={"LocalDevelopment": "true", "Architecture": "x86_64"},
    global_parameter_overrides={"AWS::Region": "us-east-1"},
)
functions = SamFunctionProvider(stacks)
runner = LocalLambdaRunner(None, functions, ".", ".", aws_region="us-east-1",
                           env_vars_values=json.load(open("env.local.json")))
for function in functions.get_all():
    env = runner._make_env_vars(function).resolve()
    ours = {k: v for k, v in env.items() if k.startswith("IMGPIPE_") or k == "RUST_LOG"}
    for name, value in sorted(ours.items()):
        if value == "" or "{{resolve:" in value:
            errors.append(f"sam local: {function.name} gets {name}={value!r}; set it in env.local.json")
    unknown = sorted(k for k in ours if k.startswith("IMGPIPE_") and k not in fields)
    errors += [f"sam local: {function.name} gets unknown {k}" for k in unknown]
    print(f"   {function.name}: {len(ours)} variables under sam local, all set")
print(f"   {len(fields)} Config fields; {len(set_in_template)} set by template.yaml, the rest listed as defaults")
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
PY
}

check_output_urls() {
  "$VENV/bin/python" scripts/check_output_urls.py template.yaml
}

check_features() { # the features each function resolves, per dependency (cargo tree; no build)
  mkdir -p "$CHECK_DIR/features"
  local f
  for f in "${FUNCTIONS[@]}"; do
    f="${f%Function}"
    cargo tree --locked -p "imgpipe-${f,,}" --target x86_64-unknown-linux-gnu -e normal,build --prefix none \
      -f '{p} {f}' | sed 's/ (\*)$//' | grep -v '^imgpipe-' | sort -u >"$CHECK_DIR/features/${f,,}.txt"
  done
  "$VENV/bin/python" - "$CHECK_DIR/features" <<'PY'
import collections, pathlib, sys
seen = collections.defaultdict(dict)  # "crate version" -> {function: features}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.txt")):
    for line in path.read_text().splitlines():
        name, version, *features = line.split(" ")
        seen[f"{name} {version}"][path.stem] = " ".join(features)
differing = {crate: by for crate, by in seen.items() if len(set(by.values())) > 1}
for crate, by in sorted(differing.items()):
    print(f"   {crate}: " + "; ".join(f"{fn}: {fs or '-'}" for fn, fs in sorted(by.items())), file=sys.stderr)
if differing:
    sys.exit(f"{len(differing)} shared dependencies are built with different features per function, so sam build "
             "compiles them (and all that depends on them) again for each; give the functions the same dependencies "
             "(see functions/sweeper/Cargo.toml)")
print(f"   {len(seen)} dependencies, each with one feature set across the functions")
PY
}

build() {
  mkdir -p "$CHECK_DIR"
  bash scripts/stack/nasm.sh # libjpeg-turbo's x86-64 SIMD (mozjpeg-sys); without it the C fallback is built
  local t0=$SECONDS line
  # Each line stamped with the seconds since the start, so that each function's build time shows.
  if ! sam build --parameter-overrides Architecture=x86_64 2>&1 | while IFS= read -r line; do
    printf '%5d s  %s\n' $((SECONDS - t0)) "$line"
  done >"$CHECK_DIR/sam-build.log"; then
    tail -n 60 "$CHECK_DIR/sam-build.log" >&2
    die "sam build (log: $CHECK_DIR/sam-build.log)"
  fi
  grep -E 'Building codeuri|Build Succeeded' "$CHECK_DIR/sam-build.log" | sed -E 's/Building codeuri: [^ ]*\/([a-z]+) .*/\1 started/; s/^/   /'
  local f bin
  for f in "${FUNCTIONS[@]}"; do
    bin=".aws-sam/build/$f/bootstrap"
    [[ -x "$bin" ]] || die "$bin is missing or not executable"
    # ELF magic, and e_machine (bytes 18-19) 0x3e = x86-64
    [[ "$(od -An -tx1 -N20 "$bin" | tr -d ' \n')" =~ ^7f454c46.{28}3e00$ ]] || die "$bin is not an x86-64 ELF file"
    log "   $bin: $(du -h "$bin" | cut -f1), x86-64 ELF"
  done
  local built
  built="$(find .aws-sam/build -mindepth 2 -maxdepth 2 -name bootstrap | wc -l)"
  [[ "$built" -eq "${#FUNCTIONS[@]}" ]] || die "expected ${#FUNCTIONS[@]} bootstraps under .aws-sam/build, found $built"
}

t0=$SECONDS
step "tools (aws-sam-cli, cfn-lint, cargo-lambda from PyPI)" install_tools
step "cfn-lint template.yaml" lint_template
step "cfn-lint on the SAM-transformed template (circular dependencies)" lint_transformed
step "sam validate --lint" validate
step "environment: Config fields, template.yaml, env.local.json under sam local" check_environment
step "output URLs: CloudFront with origin access control, custom CDN, presigned" check_output_urls
step "one feature set per dependency across the functions (cargo tree)" check_features
step "sam build --parameter-overrides Architecture=x86_64" build
log "all deployment checks passed ($((SECONDS - t0)) s)"
