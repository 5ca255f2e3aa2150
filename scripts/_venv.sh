# Sourced by scripts/run and scripts/test: make .venv and keep it installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    command -v apt-get >/dev/null 2>&1 || { echo "cannot install $*: no apt-get" >&2; return 1; }
    as_root apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && "$PY" -m venv "$VENV"; }
fi

# Reinstall only when the sources changed since the last install.
install_project() {
    local extras="$1" stamp="$VENV/.ocppgw-installed"
    local sum
    sum="$(cd "$ROOT" && cat setup.cfg pyproject.toml twisted/plugins/*.py schemas/*.json ocppgw/*.py ocppgw/*/*.py \
        | sha256sum | cut -d' ' -f1)-$extras"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip
        (cd /tmp && "$VENV/bin/python" -m pip install -q "$ROOT$extras")
        echo "$sum" > "$stamp"
    fi
}
