# sifr action script. The container's /bin/sh runs it as `sh -c SCRIPT sifr ARGS...`.
# It sources the image's environment (/.singularity.d/env/*.sh, in order), applies the
# injected variables (SIFRENV_/APPTAINERENV_/SINGULARITYENV_, --env, --env-file) right after
# 99-base.sh as Apptainer's action script does (after the last script when an image has no
# 99-base.sh), so that they override the image; sets LD_LIBRARY_PATH as Apptainer does
# (the ldconfig directories, PREPEND_/APPEND_LD_LIBRARY_PATH); applies the user's PATH
# overrides (what Apptainer's 99-runtimevars.sh does), then runs the action.
__sifr_action=$__SIFR_ACTION
__sifr_inject=$__SIFR_INJECT
__sifr_names=$__SIFR_BASE_NAMES
__sifr_injected=
unset __SIFR_ACTION __SIFR_INJECT __SIFR_BASE_NAMES
__sifr_defpath=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Apptainer's clear_env: the image's scripts run without the environment the container
# started with (host and runtime variables), except the few the shell owns and the image's
# identity; restore_env below gives back every variable they left unset, and unsets the
# ones they left empty.
__sifr_kept() {
    case "$1" in
    PWD | HOME | OPTIND | UID | GID | SINGULARITY_APPNAME | SINGULARITY_SHELL | \
        APPTAINER_NAME | APPTAINER_CONTAINER | APPTAINER_INSTANCE) return 0 ;;
    # Read-only in bash (a /bin/sh that is bash would stop at unsetting them).
    EUID | PPID | SHELLOPTS | BASHOPTS | BASH_VERSINFO) return 0 ;;
    esac
    return 1
}
set -f
for __sifr_n in $__sifr_names; do
    __sifr_kept "$__sifr_n" && continue
    eval "__sifr_saved_$__sifr_n=\${$__sifr_n}"
    unset "$__sifr_n"
done
set +f
# Apptainer's fixpath: PATH with the default directories it lacks appended.
__sifr_fixpath() {
    __sifr_p=${PATH:-}
    __sifr_ifs=$IFS
    IFS=:
    for __sifr_d in $__sifr_defpath; do
        case ":$__sifr_p:" in
        *":$__sifr_d:"*) ;;
        *) __sifr_p=${__sifr_p:+$__sifr_p:}$__sifr_d ;;
        esac
    done
    IFS=$__sifr_ifs
    export PATH="$__sifr_p"
    unset __sifr_p __sifr_ifs __sifr_d
}
__sifr_fail() {
    echo "FATAL:   $*" >&2
    exit 255
}
# Apptainer's set_default_ld_library_path: when LD_LIBRARY_PATH is only the libs directory
# 99-base.sh sets, and that directory holds libraries or PREPEND_/APPEND_LD_LIBRARY_PATH
# is set, the default system directories (what glibc's ldconfig lists) go first, so the
# bound libraries do not hide the container's own.
__sifr_default_ld_library_path() {
    [ "${LD_LIBRARY_PATH:-}" = /.singularity.d/libs ] || return 0
    if [ "$(cd /.singularity.d/libs 2>/dev/null && echo *)" = "*" ] &&
        [ -z "${PREPEND_LD_LIBRARY_PATH:-}" ] && [ -z "${APPEND_LD_LIBRARY_PATH:-}" ]; then
        return 0
    fi
    __sifr_dirs="$( (/sbin/ldconfig -Nv | /bin/sed '/^	/d;s/:.*//') 2>/dev/null)"
    [ -n "$__sifr_dirs" ] || return 0
    __sifr_lp=
    set -f
    for __sifr_d in $__sifr_dirs; do __sifr_lp="$__sifr_lp$__sifr_d:"; done
    set +f
    export LD_LIBRARY_PATH="$__sifr_lp$LD_LIBRARY_PATH"
    unset __sifr_dirs __sifr_lp __sifr_d
}
__sifr_inject_now() {
    eval "$__sifr_inject"
    __sifr_injected=1
    __sifr_default_ld_library_path
}
if [ -d /.singularity.d/env ]; then
    for __sifr_f in /.singularity.d/env/*.sh; do
        [ -f "$__sifr_f" ] || continue
        case "$__sifr_f" in
        */99-runtimevars.sh) continue ;;
        /.singularity.d/env/90-environment.sh)
            # Not every image has the docker scripts that set PATH.
            [ -n "${PATH+x}" ] || export PATH="$__sifr_defpath"
            . "$__sifr_f"
            ;;
        /.singularity.d/env/10-docker2singularity.sh | /.singularity.d/env/10-docker.sh)
            . "$__sifr_f"
            __sifr_fixpath
            ;;
        /.singularity.d/env/99-base.sh)
            . "$__sifr_f"
            __sifr_inject_now
            ;;
        *) . "$__sifr_f" ;;
        esac
    done
elif [ -f /environment ]; then
    . /environment
    __sifr_fixpath
fi
[ -n "$__sifr_injected" ] || __sifr_inject_now
unset __sifr_inject __sifr_injected __sifr_f
if [ -n "${LD_LIBRARY_PATH:-}" ]; then
    if [ -n "${PREPEND_LD_LIBRARY_PATH:-}" ]; then
        LD_LIBRARY_PATH="$PREPEND_LD_LIBRARY_PATH:$LD_LIBRARY_PATH"
    fi
    if [ -n "${APPEND_LD_LIBRARY_PATH:-}" ]; then
        LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$APPEND_LD_LIBRARY_PATH"
    fi
fi
# Apptainer's restore_env.
set -f
for __sifr_n in $__sifr_names; do
    __sifr_kept "$__sifr_n" && continue
    if eval "[ -z \"\${$__sifr_n+x}\" ]"; then
        eval "$__sifr_n=\$__sifr_saved_$__sifr_n"
        export "$__sifr_n"
    elif eval "[ -z \"\${$__sifr_n}\" ]"; then
        unset "$__sifr_n"
    fi
    unset "__sifr_saved_$__sifr_n"
done
set +f
unset __sifr_names __sifr_n
if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then PATH=$SING_USER_DEFINED_PATH; fi
if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then PATH=$SING_USER_DEFINED_PREPEND_PATH:$PATH; fi
if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then PATH=$PATH:$SING_USER_DEFINED_APPEND_PATH; fi
unset SING_USER_DEFINED_PATH SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH
[ -n "${PATH:-}" ] || PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
__sifr_app=${APPTAINER_APPNAME:-}
__sifr_init=${__SIFR_INSTANCE_INIT:-}
unset __SIFR_INSTANCE_INIT
__sifr_do() {
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
}
if [ -z "$__sifr_init" ]; then
    __sifr_do "$@"
    exit
fi
# An instance's init (Apptainer's appinit): the start script (or runscript) runs in the
# background and this shell stays, so the instance lives on after the script ends. A
# signal is passed on to the script; this shell ends with it (stop's timeout ends a
# script that ignores it with SIGKILL).
__sifr_stop() {
    trap '' "$1"
    kill -s "$1" "$__sifr_child" 2>/dev/null
    [ -n "${__sifr_s:-}" ] && kill "$__sifr_s" 2>/dev/null
    wait "$__sifr_child" 2>/dev/null
    exit $((128 + $2))
}
trap '__sifr_stop HUP 1' HUP
trap '__sifr_stop INT 2' INT
trap '__sifr_stop QUIT 3' QUIT
trap '__sifr_stop USR1 10' USR1
trap '__sifr_stop USR2 12' USR2
trap '__sifr_stop TERM 15' TERM
__sifr_do "$@" </dev/null &
__sifr_child=$!
wait "$__sifr_child"
while :; do
    sleep 86400 &
    __sifr_s=$!
    wait "$__sifr_s"
done
