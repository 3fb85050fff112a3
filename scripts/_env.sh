# Shared by scripts/test.sh and scripts/quickstart.sh: make sure a Python environment with our
# requirements exists, creating ./.venv on first use. Installs nothing that is already there.
ensure_env() {
    local req="$1"
    if [[ -z "${VIRTUAL_ENV:-}" ]]; then
        if [[ ! -x .venv/bin/python ]]; then
            echo "[setup] creating .venv (first run only)"
            python3 -m venv .venv
        fi
        # shellcheck disable=SC1091
        source .venv/bin/activate
    fi
    local stamp=".venv-installed-$(cat requirements.txt "$req" | cksum | cut -d' ' -f1)"
    local stamp_path="${VIRTUAL_ENV}/${stamp}"
    if [[ ! -f "$stamp_path" ]]; then
        echo "[setup] installing requirements into ${VIRTUAL_ENV} (about a minute the first time)"
        # (some machines' pip configs name missing local indexes; those warnings are noise)
        python -m pip install -q --disable-pip-version-check -r "$req" \
            2> >(grep -v '^WARNING: Location .* is ignored' >&2)
        python -m pip install -q --disable-pip-version-check --no-deps -e . \
            2> >(grep -v '^WARNING: Location .* is ignored' >&2)
        touch "$stamp_path"
    fi
}
