# qppsuite's default guest workload, run by /init when no --cmd was given.
#
# Every section starts with a marker line "=== qppsuite: <section> ===" so
# tests can cut the console log into parts.  The sections exercise what the
# analysis plugins are judged on: process creation, file I/O, /proc, a socket,
# memory maps and open files of a known process, and a kernel module.  Every
# command costs guest instructions in every default run, so keep it lean.
# Output is deterministic except for what legitimately varies (uptime,
# interrupt counts).

section() {
	echo "=== qppsuite: $* ==="
}

# Waits until process $1 has exec'd program $2, so what is printed about it
# shows the program and not the forked shell.  It sleeps between checks
# rather than spinning: a spin would keep the child off the CPU for a whole
# time slice and flood the syscall log with reads of /proc/$1/comm.
wait_for_exec() {
	while :; do
		read -r comm < "/proc/$1/comm" || return 1
		[ "$comm" = "$2" ] && return 0
		sleep 0.05
	done
}

section kernel
uname -r

section fork-exec
/bin/sh -c 'exit 7'
echo "child exited with $?"
(exit 3)
echo "subshell exited with $?"

section pipeline
echo "hello from the qppsuite guest" | tr a-z A-Z | wc -c

section background
sleep 0.2 &
job=$!
wait "$job"
echo "background job exited with $?"

section file-io
echo "first line" > /tmp/qppsuite-a.txt
echo "second line" >> /tmp/qppsuite-a.txt
cat /tmp/qppsuite-a.txt
mv /tmp/qppsuite-a.txt /tmp/qppsuite-b.txt
wc -l < /tmp/qppsuite-b.txt
rm /tmp/qppsuite-b.txt
ls -a /tmp

section proc
ls /
cat /proc/version
cat /proc/self/status
cat /proc/interrupts
cat /proc/cpuinfo
sleep 0.2

section network
if command -v nc > /dev/null; then
	echo "pong from the server" | nc -l -p 5555 > /tmp/qppsuite-nc.out &
	server=$!
	# Port 5555 is 15B3 in /proc/net/tcp{,6}; state 0A is LISTEN.  busybox
	# nc listens on the IPv6 wildcard, which also accepts 127.0.0.1.
	until grep -qs ':15B3 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6; do
		sleep 0.05
	done
	echo "ping from the client" | nc 127.0.0.1 5555
	wait "$server"
	cat /tmp/qppsuite-nc.out
	rm /tmp/qppsuite-nc.out
else
	echo "nc: not in this image"
fi

section processes
sleep 1 &
first=$!
sleep 1 &
second=$!
sleep 2 &
pid=$!
wait_for_exec "$first" sleep
wait_for_exec "$second" sleep
wait_for_exec "$pid" sleep
ps -o pid,ppid,comm

section "maps pid=$pid"
cat "/proc/$pid/maps"

section "fds pid=$pid"
ls -l "/proc/$pid/fd"

kill "$first" "$second" "$pid"
wait

section modules
for ko in $(find "/lib/modules/$(uname -r)" -name '*.ko' | sort); do
	insmod "$ko" && echo "loaded ${ko##*/}"
done
lsmod

section done
