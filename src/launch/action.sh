# sifr action script. The container's /bin/sh runs it as `sh -c SCRIPT sifr ARGS...`.
# It sources the image's environment (/.singularity.d/env/*.sh, in order), applies the
# injected variables (SIFRENV_/APPTAINERENV_/SINGULARITYENV_, --env, --env-file) so that
# they override the image, applies the user's PATH overrides (what Apptainer's
# 99-runtimevars.sh does), then runs the action.
__sifr_action=$__SIFR_ACTION
__sifr_inject=$__SIFR_INJECT
unset __SIFR_ACTION __SIFR_INJECT
__sifr_fail() {
    echo "FATAL:   $*" >&2
    exit 255
}
if [ -d /.singularity.d/env ]; then
    for __sifr_f in /.singularity.d/env/*.sh; do
        [ -f "$__sifr_f" ] || continue
        case "$__sifr_f" in */99-runtimevars.sh) continue ;; esac
        . "$__sifr_f"
    done
elif [ -f /environment ]; then
    . /environment
fi
eval "$__sifr_inject"
unset __sifr_inject __sifr_f
if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then PATH=$SING_USER_DEFINED_PATH; fi
if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then PATH=$SING_USER_DEFINED_PREPEND_PATH:$PATH; fi
if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then PATH=$PATH:$SING_USER_DEFINED_APPEND_PATH; fi
unset SING_USER_DEFINED_PATH SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH
[ -n "${PATH:-}" ] || PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
__sifr_app=${APPTAINER_APPNAME:-}
case "$__sifr_action" in
exec)
    [ $# -gt 0 ] || __sifr_fail "no command given"
    # (No /dev/null: with --no-mount dev or mount dev = no the container may have none.)
    __sifr_x=$(command -v "$1") || __sifr_fail "\"$1\": executable file not found in \$PATH"
    exec "$@"
    ;;
run)
    if [ -n "$__sifr_app" ]; then
        __sifr_r="/scif/apps/$__sifr_app/scif/runscript"
        [ -f "$__sifr_r" ] || __sifr_fail "no runscript for app \"$__sifr_app\" in the container"
        [ -x "$__sifr_r" ] && exec "$__sifr_r" "$@"
        exec /bin/sh "$__sifr_r" "$@"
    fi
    for __sifr_r in /.singularity.d/runscript /singularity; do
        [ -x "$__sifr_r" ] && exec "$__sifr_r" "$@"
        [ -f "$__sifr_r" ] && exec /bin/sh "$__sifr_r" "$@"
    done
    exec /bin/sh "$@"
    ;;
shell)
    PS1="Apptainer> "
    export PS1
    if [ -n "${APPTAINER_SHELL:-}" ]; then exec "$APPTAINER_SHELL" "$@"; fi
    if [ -x /bin/bash ]; then exec /bin/bash --norc "$@"; fi
    exec /bin/sh "$@"
    ;;
test)
    __sifr_t=/.singularity.d/test
    [ -n "$__sifr_app" ] && __sifr_t="/scif/apps/$__sifr_app/scif/test"
    if [ -f "$__sifr_t" ]; then
        [ -x "$__sifr_t" ] && exec "$__sifr_t" "$@"
        exec /bin/sh "$__sifr_t" "$@"
    fi
    echo "INFO:    No test script found in container, exiting" >&2
    exit 0
    ;;
start)
    __sifr_s=/.singularity.d/startscript
    [ -n "$__sifr_app" ] && __sifr_s="/scif/apps/$__sifr_app/scif/startscript"
    if [ -f "$__sifr_s" ]; then
        [ -x "$__sifr_s" ] && exec "$__sifr_s" "$@"
        exec /bin/sh "$__sifr_s" "$@"
    fi
    exit 0
    ;;
*)
    __sifr_fail "unknown action \"$__sifr_action\""
    ;;
esac
