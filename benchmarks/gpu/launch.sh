#!/usr/bin/env bash
# GPU proof kit launcher, run HERE (not on the GPU machine):
#   benchmarks/gpu/launch.sh start   fetch the wheels (.whl/) if missing, and put the checkout in a state the
#                                    device tool can carry (<= 64 MiB): a temporary branch whose tree leaves out
#                                    artifacts/ (the shipped model, 56 MB), artifacts/ ignored while it lasts;
#                                    prints the device call to make
#   benchmarks/gpu/launch.sh end     back to the branch you were on; the temporary branch and the ignore go
# The kit needs nothing from artifacts/. Tracked changes must be committed (or stashed) before `start`.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
BRANCH=gpu-kit-without-artifacts
EXCLUDE=$(git rev-parse --git-path info/exclude)
ORIGIN=$(git rev-parse --git-path gpu-kit-origin)
COMMENT="# gpu-kit: ignored while $BRANCH is checked out (benchmarks/gpu/launch.sh end removes it)"
LINE="/artifacts/"

start() {
    if [ -e "$ORIGIN" ]; then echo "error: a kit state is already set up; run: $0 end" >&2; exit 2; fi
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
        echo "error: the checkout has uncommitted changes to tracked files; commit or stash them first" >&2; exit 2
    fi
    compgen -G ".whl/keras-*.whl" >/dev/null || bash benchmarks/gpu/wheels.sh
    git symbolic-ref -q --short HEAD >"$ORIGIN" || git rev-parse HEAD >"$ORIGIN"
    git checkout -q -b "$BRANCH"
    git rm -r -q --cached artifacts
    git -c user.name=gpu-kit -c user.email=gpu-kit@localhost commit -q -m "gpu kit: the tree without artifacts/ (temporary)"
    mkdir -p "$(dirname "$EXCLUDE")"
    [ ! -s "$EXCLUDE" ] || [ -z "$(tail -c1 "$EXCLUDE")" ] || echo >>"$EXCLUDE"
    printf '%s\n%s\n' "$COMMENT" "$LINE" >>"$EXCLUDE"
    tracked=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
    others=$(git ls-files -z --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
    wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
    echo "ready: $(( (tracked + ${others:-0} + wheels) / 1048576 )) MiB travel (limit 64)."
    echo "now call the device tool: run(command=\"bash benchmarks/gpu/run.sh\", carry=[\".whl\"], timeout_s=540)"
    echo "then: $0 end"
}

end() {
    if [ ! -e "$ORIGIN" ]; then echo "error: no kit state to end" >&2; exit 2; fi
    origin=$(cat "$ORIGIN")
    git checkout -q "$origin"  # puts artifacts/ back under git (the files never left the disk)
    git branch -q -D "$BRANCH"
    grep -vxF -e "$COMMENT" -e "$LINE" "$EXCLUDE" >"$EXCLUDE.new" || true
    mv "$EXCLUDE.new" "$EXCLUDE"
    rm -f "$ORIGIN"
    echo "back on $origin"
}

case "${1:-}" in
    start) start ;;
    end) end ;;
    *) echo "usage: $0 start|end" >&2; exit 2 ;;
esac
