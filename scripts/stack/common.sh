# Shared settings for scripts/stack/*.sh (sourced, not run).
# Everything lives under the git-ignored folder .stack/ at the repo root.

STACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="$STACK_ROOT/.stack"

# Pinned versions (see README / install.sh for why these).
ELASTICMQ_VERSION="1.7.1"        # org.elasticmq:elasticmq-server_2.13, newest on Maven Central, Java 8+ bytecode
FERRETDB_VERSION="v1.24.2"       # github.com/FerretDB/FerretDB, last 1.x with the SQLite handler
AWSCLI_VERSION="1.46.2"          # the AWS CLI (PyPI) for `aws s3 cp` drops; pins botocore 1.44 like boto3
BOTO3_VERSION="1.44.8"            # check.py client
PYMONGO_VERSION="4.20.1"         # check.py client

# The key pair of every local server and client (the local S3 verifies signatures made with it).
STACK_ACCESS_KEY="test"
STACK_SECRET_KEY="test"
STACK_REGION="us-east-1"

# Ports (all servers bind 127.0.0.1 only).
S3_PORT="${IMGPIPE_S3_PORT:-4566}"
SQS_PORT="${IMGPIPE_SQS_PORT:-9324}"
MONGO_PORT="${IMGPIPE_MONGO_PORT:-27017}"

BIN_DIR="$STACK_DIR/bin"
LOG_DIR="$STACK_DIR/logs"
PID_DIR="$STACK_DIR/pids"
DATA_DIR="$STACK_DIR/data"
VENV_DIR="$STACK_DIR/venv"
EMQ_DIR="$STACK_DIR/elasticmq"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# port_open PORT -> 0 if something accepts TCP connections on 127.0.0.1:PORT
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_matches PID PATTERN -> 0 if PID is alive and its command line contains PATTERN
pid_matches() {
  local pid="$1" pattern="$2" cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$pattern"* ]]
}

# Patterns that identify each server's process (used by start.sh and stop.sh).
declare -A STACK_PATTERN=(
  [local-s3]="$BIN_DIR/imgpipe-local-s3"
  # The S3 server before local-s3: stop.sh still stops a moto that start.sh started back then.
  [moto]="$VENV_DIR/bin/moto_server"
  [elasticmq]="org.elasticmq.server.Main"
  [ferretdb]="$BIN_DIR/ferretdb"
)
