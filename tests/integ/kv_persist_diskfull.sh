#!/usr/bin/env bash
# keel-kv on a full disk: a 4 MiB tmpfs (skipped, exit 77, where mount is
# not permitted), appendonly yes, once with appendfsync everysec and once
# with always. A filler file leaves little room; kv_writer SETs 1 KB values
# until the disk is full: the writes in flight then wait for their replies
# (a reply waits until its record reaches the file), and new writes and
# PING get "-MISCONF Errors writing to the AOF file: No space left on
# device"; GETs still answer, with every acknowledged value. The filler is
# removed: within 5 s writes are accepted again and the writes that were
# waiting are acknowledged.
# After SIGTERM and a restart every acknowledged write is there.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"
writer=${2:?usage: $0 KEEL_KV_BIN KV_WRITER}
source "$(dirname "$0")/kv_persist_lib.sh"
need mount umount dd df

mnt=$work/mnt
mkdir -p "$mnt"
if ! mount -t tmpfs -o size=4m tmpfs "$mnt" 2>"$work/mount.err"; then
    echo "kv_persist_diskfull: SKIP: cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): $(cat "$work/mount.err")"
    exit 77
fi
mounted=1
diskfull_cleanup() {
    # keel-kv first: its open files keep the tmpfs busy.
    [[ -n $kv_pid ]] && { kill -9 "$kv_pid" 2>/dev/null; wait "$kv_pid" 2>/dev/null; kv_pid=; }
    [[ -n ${wpid:-} ]] && { kill -9 "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null; }
    [[ -n $mounted ]] && { umount "$mnt" 2>/dev/null || umount -l "$mnt"; }
    kv_cleanup
}
trap diskfull_cleanup EXIT

misconf="MISCONF Errors writing to the AOF file: No space left on device"
info_field() { R info persistence | tr -d '\r' | sed -n "s/^$1://p"; }

for mode in everysec always; do
    dir=$mnt/$mode
    mkdir -p "$dir"
    start_kv --appendonly yes --appendfsync "$mode" --save "" --dir "$dir"
    "$writer" set "$kv_port" "$work/pre.$mode" -c 2 -d 4 -p "p$mode" -n 200 -s 1000 >"$work/writer.out" ||
        fail "$mode: writer: $(cat "$work/writer.out")"
    # Leave about 256 KiB.
    avail=$(df -B1 --output=avail "$mnt" | tail -n 1)
    dd if=/dev/zero of="$mnt/filler" bs=64K count=$(((avail - 256 * 1024) / 65536)) status=none 2>/dev/null
    "$writer" set "$kv_port" "$work/acked.$mode" -c 2 -d 4 -p "w$mode" -s 1000 -e >"$work/writer.out" 2>&1 &
    wpid=$!
    # In every mode a write's reply waits until its record reaches the
    # file (durable with always), so the writes in flight when the disk
    # fills wait, and the writer may see no error: PING on another
    # connection tells.
    for _ in $(seq 200); do
        [[ $(R ping) == "$misconf" ]] && break
        sleep 0.05
    done
    [[ $(R ping) == "$misconf" ]] || fail "$mode: PING on a full disk: '$(R ping)', want '$misconf'"
    [[ $(R set x y) == "$misconf" ]] || fail "$mode: SET on a full disk: '$(R set x y)'"
    [[ $(info_field aof_last_write_status) == err ]] || fail "$mode: aof_last_write_status '$(info_field aof_last_write_status)', want err"
    # Reads go on, and every write acknowledged so far is readable.
    sed '$d' "$work/acked.$mode" >"$work/early"
    "$writer" check "$kv_port" "$work/early" >"$work/check.out" || fail "$mode: GETs on a full disk: $(cat "$work/check.out")"
    "$writer" check "$kv_port" "$work/pre.$mode" >"$work/check.out" || fail "$mode: GETs on a full disk: $(cat "$work/check.out")"
    n_full=$(wc -l <"$work/acked.$mode")
    sleep 1.2
    [[ $(R set x y) == "$misconf" ]] || fail "$mode: SET on a still full disk after a retry: '$(R set x y)'"
    n2=$(wc -l <"$work/acked.$mode")
    ((n2 == n_full)) || fail "$mode: $((n2 - n_full)) writes acknowledged while the disk was full"
    # The writer stops sending (its writes in flight still wait for their
    # replies): a writer going on at full speed would fill the 4 MiB again
    # within a second of the space coming back.
    waiting=
    if kill -0 "$wpid" 2>/dev/null; then
        waiting=1
        kill -USR1 "$wpid"
    fi
    rm -f "$mnt/filler"
    ok=
    for _ in $(seq 50); do
        [[ $(R set x y) == OK ]] && { ok=1; break; }
        sleep 0.1
    done
    [[ -n $ok ]] || fail "$mode: writes still refused 5 s after space returned: '$(R set x y)'"
    # The writes that waited are acknowledged now (unless the writer had
    # already stopped at a -MISCONF).
    if [[ -n $waiting ]]; then
        for _ in $(seq 50); do
            (($(wc -l <"$work/acked.$mode") > n_full)) && break
            sleep 0.1
        done
        (($(wc -l <"$work/acked.$mode") > n_full)) || fail "$mode: the waiting writes not acknowledged 5 s after space returned"
    fi
    for _ in $(seq 100); do
        kill -0 "$wpid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$wpid" 2>/dev/null && fail "$mode: the writer still waits for replies 10 s after space returned"
    wait "$wpid"
    rc=$?
    [[ $rc -eq 3 || $rc -eq 0 ]] || fail "$mode: writer: $(cat "$work/writer.out")"
    wpid=
    [[ $(info_field aof_last_write_status) == ok ]] || fail "$mode: aof_last_write_status '$(info_field aof_last_write_status)' after recovery"
    "$writer" set "$kv_port" "$work/post.$mode" -c 2 -d 4 -p "q$mode" -n 200 -s 1000 >"$work/writer.out" ||
        fail "$mode: writer after recovery: $(cat "$work/writer.out")"
    n=$(wc -l <"$work/acked.$mode")
    stop_kv
    start_kv --appendonly yes --appendfsync "$mode" --save "" --dir "$dir"
    for log in pre acked post; do
        "$writer" check "$kv_port" "$work/$log.$mode" >"$work/check.out" ||
            fail "$mode: after the disk-full episode and a restart ($log): $(cat "$work/check.out")"
    done
    [[ $(R get x) == y ]] || fail "$mode: the first write after recovery is missing"
    stop_kv
    rm -rf "$dir"
    echo "$mode: -MISCONF when full after $n_full acknowledged writes ($n once drained), reads served, writes back within 5 s, all loaded after a restart"
done
umount "$mnt" && mounted=
echo "PASS: a full disk gives -MISCONF to writes and PING, reads go on, writes resume when space returns, no acknowledged write lost"
