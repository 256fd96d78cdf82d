#!/usr/bin/env bash
# Boot the image in qemu-system-aarch64 (-M virt, no network but two port
# forwards on 127.0.0.1) and check the appliance as a user would, twice:
#   1. role both, hostname piotest: /unit_api/health answers, systemd says
#      `running`, the hostname is set, the root was grown, /api/workers lists
#      piotest, mosquitto answers, chrony serves time, lab can sudo, the unit sets the clock
#      through its sudo whitelist, and it outlives its watchdog period unrestarted;
#   2. a fresh copy as role worker (piotest-w, leader elsewhere): health answers,
#      /api is the worker's 404, mosquitto is not running, and it keeps asking its
#      leader to add it without holding up boot.
# Both boot the simulated reactor (the pioreactor-simulated flag) and take the
# kernel and initrd from the image's FAT partition, so they need a Debian kernel.
#   boot-test.sh IMG          environment: BOOT_TIMEOUT (seconds per boot, 900)
set -euo pipefail

die() { echo "boot-test.sh: FAIL: $*" >&2; exit 1; }
say() { printf '[%s] boot-test.sh: %s\n' "$(date +%T)" "$*" >&2; }

[ $# -eq 1 ] || die "usage: boot-test.sh IMG"
img="$(realpath "$1")"
[ -f "$img" ] || die "no such image: $img"
boot_timeout="${BOOT_TIMEOUT:-900}"
export MTOOLS_SKIP_CHECK=1
for tool in qemu-system-aarch64 qemu-img mcopy ssh ssh-keygen curl sfdisk python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool is missing: run image/build.sh deps"
done

work="$(mktemp -d "$(dirname "$img")/boottest.XXXXXX")"
qemu_pid=""
stop_vm() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    qemu_pid=""
}
trap 'stop_vm; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# Partition 1 (FAT) and 2 (root) offsets, from the table.
read -r boot_start root_sectors < <(sfdisk -J "$img" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"]
print(p[0]["start"], p[1]["size"])')
fat="@@$((boot_start * 512))"
kernel="$(mdir -b -i "$img$fat" '::/vmlinuz-*' 2>/dev/null | head -n 1)"
initrd="$(mdir -b -i "$img$fat" '::/initrd.img-*' 2>/dev/null | head -n 1)"
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
    die "no vmlinuz-*/initrd.img-* on the boot partition (qemu virt needs Debian's kernel)"
fi
mcopy -n -i "$img$fat" "$kernel" "$work/vmlinuz"
mcopy -n -i "$img$fat" "$initrd" "$work/initrd"
mtype -i "$img$fat" ::/cmdline.txt >"$work/cmdline.txt"
root_arg="$(tr ' ' '\n' <"$work/cmdline.txt" | grep '^root=' | head -n 1)"
[ -n "$root_arg" ] || die "cmdline.txt names no root="
ssh-keygen -q -t ed25519 -N '' -C boot-test -f "$work/id"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# boot NAME INI: a fresh sparse copy with the boot-partition files, booted in the background.
boot() {
    local name="$1" ini="$2" copy="$work/$1.img"
    cp --sparse=always "$img" "$copy"
    printf '%s\n' "$ini" >"$work/pioreactor.ini"
    : >"$work/pioreactor-simulated"
    mcopy -o -i "$copy$fat" "$work/pioreactor.ini" "$work/pioreactor-simulated" ::/
    mcopy -o -i "$copy$fat" "$work/id.pub" ::/authorized_keys
    # A bigger virtual disk than the image, so first boot has a root to grow.
    qemu-img create -q -f qcow2 -b "$copy" -F raw "$work/$name.qcow2" 4G
    http_port="$(free_port)"
    ssh_port="$(free_port)"
    console="$work/$name.console.log"
    say "$name: booting (http 127.0.0.1:$http_port, ssh 127.0.0.1:$ssh_port)"
    boot_t0=$SECONDS
    timeout "$boot_timeout" qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 \
        -nographic -no-reboot -kernel "$work/vmlinuz" -initrd "$work/initrd" \
        -append "$root_arg rw console=ttyAMA0 net.ifnames=0 rootwait" \
        -drive "if=none,id=hd,file=$work/$name.qcow2,format=qcow2" -device virtio-blk-pci,drive=hd \
        -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$http_port-:80,hostfwd=tcp:127.0.0.1:$ssh_port-:22" \
        -device virtio-net-pci,netdev=n0 </dev/null >"$console" 2>&1 &
    qemu_pid=$!
}

http() { curl -s --max-time 10 -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$http_port$1" || true; }

vm_ssh() {
    ssh -i "$work/id" -p "$ssh_port" -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null lab@127.0.0.1 "$@"
}

# Print what helps to understand a failed boot, then fail.
fail() {
    echo "boot-test.sh: FAIL ($name, $((SECONDS - boot_t0)) s after start): $*" >&2
    echo "---- console (last 60 lines) ----" >&2
    tail -n 60 "$console" >&2 || true
    if kill -0 "$qemu_pid" 2>/dev/null; then
        echo "---- systemctl --failed; journalctl -b -p warning ----" >&2
        vm_ssh 'systemctl --failed --no-pager; sudo -n journalctl -b -p warning --no-pager 2>/dev/null \
            || journalctl -b -p warning --no-pager' 2>&1 | tail -n 80 >&2 || true
    fi
    exit 1
}

wait_for() { # WHAT SECONDS COMMAND...: poll until COMMAND succeeds
    local what="$1" limit=$((SECONDS + $2))
    shift 2
    until "$@"; do
        kill -0 "$qemu_pid" 2>/dev/null || fail "qemu stopped while waiting for $what"
        [ $SECONDS -lt "$limit" ] || fail "no $what"
        sleep 3
    done
}
health_ok() { [ "$(http /unit_api/health)" = 200 ]; }
ssh_ok() { vm_ssh true 2>/dev/null; }
system_running() {
    local state
    state="$(vm_ssh 'timeout 300 systemctl is-system-running --wait' || true)"
    [ "$state" = running ] || fail "systemctl is-system-running says '$state'"
}
mqtt_answers() { # an MQTT 3.1.1 CONNECT to the broker on 127.0.0.1:1883 gets a CONNACK
    vm_ssh python3 - <<'EOF'
import socket
s = socket.create_connection(("127.0.0.1", 1883), timeout=10)
s.sendall(bytes([0x10, 18, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 6]) + b"piotst")
assert s.recv(4)[:2] == bytes([0x20, 2]), "no CONNACK"
EOF
}
ntp_served() { # chrony answers an NTP client on the VM's LAN address (no internet: its own clock, stratum 10)
    vm_ssh python3 - <<'EOF'
import socket
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect(("10.0.2.2", 9))  # the user network's gateway: only to learn our own address
lan = probe.getsockname()[0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(bytes([0x23]) + bytes(47), (lan, 123))  # NTPv4, client mode
reply = s.recv(48)
assert len(reply) == 48 and reply[0] & 7 == 4 and reply[1] == 10, reply[:4]
EOF
}
task_finished() { # the task whose result path is in $task has succeeded or failed
    [ "$(http "$task")" = 200 ] && python3 - "$work/body" <<'EOF'
import json, sys
sys.exit(0 if json.load(open(sys.argv[1]))["status"] in ("succeeded", "failed") else 1)
EOF
}
clock_set_through_sudo() { # POST /unit_api/system/utc_clock runs `sudo date` from inside the unit's sandbox
    local now code
    now="$(vm_ssh date -u +%Y-%m-%dT%H:%M:%S.000Z)"
    code="$(curl -s --max-time 10 -o "$work/body" -w '%{http_code}' -H 'Content-Type: application/json' \
        -d "{\"utc_clock_time\": \"$now\"}" "http://127.0.0.1:$http_port/unit_api/system/utc_clock" || true)"
    [ "$code" = 202 ] || fail "POST /unit_api/system/utc_clock answered $code: $(cat "$work/body")"
    task="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["result_url_path"])' "$work/body")"
    wait_for "end of the clock task" 60 task_finished
    grep -q '"status": *"succeeded"' "$work/body" || fail "setting the clock through sudo failed: $(cat "$work/body")"
}
watchdog_fed() { # the appliance outlives its watchdog period (60 s) unrestarted: the reactor feeds it
    vm_ssh python3 - <<'EOF'
import subprocess, time
def show():
    out = subprocess.run(
        ["systemctl", "show", "pioreactor", "-p", "MainPID", "-p", "NRestarts", "-p", "ActiveState",
         "-p", "WatchdogUSec", "-p", "ActiveEnterTimestampMonotonic"],
        capture_output=True, text=True, check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines())
def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
first = show()
assert first["WatchdogUSec"] not in ("0", "infinity"), first
since = int(first["ActiveEnterTimestampMonotonic"])
time.sleep(max(0.0, (since + 75e6 - now()) / 1e6))
last = show()
assert (last["MainPID"], last["NRestarts"], last["ActiveState"]) == (first["MainPID"], "0", "active"), (first, last)
print(round((now() - since) / 1e6))
EOF
}
worker_listed() { # /api/workers has UNIT and it is active
    [ "$(http /api/workers)" = 200 ] && python3 - "$work/body" "$1" <<'EOF'
import json, sys
workers = json.load(open(sys.argv[1]))
sys.exit(0 if any(w["pioreactor_unit"] == sys.argv[2] and w["is_active"] == 1 for w in workers) else 1)
EOF
}

# --- 1. role both --------------------------------------------------------------
name=both
boot both "$(printf '[pioreactor]\nrole = both\nhostname = piotest')"
wait_for "answer from /unit_api/health" "$boot_timeout" health_ok
say "both: health answers after $((SECONDS - boot_t0)) s: $(cat "$work/body")"
wait_for "ssh login as lab" 120 ssh_ok
system_running
say "both: systemctl is-system-running: running ($((SECONDS - boot_t0)) s)"
[ "$(vm_ssh hostname)" = piotest ] || fail "hostname is $(vm_ssh hostname), not piotest"
root_bytes="$(vm_ssh df -B1 --output=size / | tail -n 1 | tr -d ' ')"
[ "$root_bytes" -gt $((root_sectors * 512)) ] || fail "root not grown: $root_bytes bytes"
say "both: hostname piotest, root grown to $((root_bytes / 1048576)) MiB"
wait_for "piotest in /api/workers" 180 worker_listed piotest
say "both: /api/workers lists piotest"
mqtt_answers || fail "mosquitto does not answer on 1883"
say "both: mosquitto answers"
wait_for "chrony serving the cluster's clock" 60 ntp_served
say "both: chrony serves time to the LAN at stratum 10 (it has no internet to follow)"
vm_ssh sudo -n true || fail "lab cannot sudo"
clock_set_through_sudo
say "both: lab can sudo; the unit set the clock through its sudo whitelist"
fed="$(watchdog_fed)" || fail "pioreactor.service was restarted, or its watchdog is off"
say "both: pioreactor.service up $fed s, past its 60 s watchdog, never restarted; passed in $((SECONDS - boot_t0)) s"
stop_vm

# --- 2. role worker, leader elsewhere ------------------------------------------
name=worker
boot worker "$(printf '[pioreactor]\nrole = worker\nhostname = piotest-w\nleader_hostname = leader\nleader_address = leader.local')"
wait_for "answer from /unit_api/health" "$boot_timeout" health_ok
say "worker: health answers after $((SECONDS - boot_t0)) s"
wait_for "ssh login as lab" 120 ssh_ok
system_running
[ "$(vm_ssh hostname)" = piotest-w ] || fail "hostname is $(vm_ssh hostname), not piotest-w"
code="$(http /api/workers)"
[ "$code" = 404 ] || fail "a worker's /api/workers answered $code, not 404"
state="$(vm_ssh systemctl is-active mosquitto || true)"
[ "$state" != active ] || fail "mosquitto runs on a worker"
# Its leader is away: the worker keeps asking to join, and boot did not wait for it (running, above).
joining() {
    [ "$(vm_ssh systemctl is-active pioreactor-register.service || true)" = active ] &&
        vm_ssh sudo -n journalctl -u pioreactor-register.service --no-pager | grep -q "adding piotest-w, attempt"
}
wait_for "pioreactor-register.service asking the leader to add piotest-w" 120 joining
[ "$(vm_ssh systemctl is-active chrony.service || true)" = active ] || fail "chrony is not running"
vm_ssh grep -qx "'server leader.local iburst prefer'" /etc/chrony/conf.d/pioreactor.conf || fail "chrony does not follow the leader"
say "worker: running, /api is 404, mosquitto $state, asking leader.local to add it, its clock following it; passed in $((SECONDS - boot_t0)) s"
stop_vm
say "PASS"
