#!/usr/bin/env bash
# core_layer.sh SRC: the model core (SRC/core) stays below the database. Each core file may
# include, in quotes, only headers of SRC/core, and none may name sqlite3 (the include or an
# API call). Fails naming each offending line.
set -u
core="$1/core"
[ -d "$core" ] || { echo "no $core"; exit 1; }
bad=0
for f in "$core"/*.c "$core"/*.h; do
    while IFS= read -r inc; do
        if [ ! -f "$core/$inc" ]; then
            echo "$f: includes \"$inc\", which is not in src/core"
            bad=1
        fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
done
if grep -n -i 'sqlite3' "$core"/*.c "$core"/*.h; then
    echo "src/core names sqlite3 (above): the core must not use the database"
    bad=1
fi
[ "$bad" = 0 ] && echo "src/core: $(ls "$core" | wc -l) files, only core includes, no sqlite3"
exit "$bad"
