#!/bin/sh
# qppsuite guest init: PID 1 of every qppsuite image (/init in a built image, /.qppsuite/init in an
# imported one, which the boot line's rdinit= names so the image's own /init is left alone).
#
# It prepares just enough of a system for the workload to be interesting to
# the analysis plugins (proc, sys, devtmpfs, a tmpfs, loopback), runs the
# channel's agent when the run delivered one as /etc/qppsuite/agent, the
# user's --cmd when the run delivered one as /etc/qppsuite/cmd, and the
# image's workload otherwise, reports the exit status on a marker line the
# host searches for, and powers off through PSCI so the emulator stops cleanly
# instead of seeing PID 1 exit (which would panic the kernel).
#
# Its own commands come from the toolkit, /.qppsuite/bin (busybox applets), so they work in any root
# filesystem; what the user runs gets the image's own /bin/sh and a PATH in which the image's programs
# come first and the toolkit last, so no busybox applet silently stands in for an installed program.

tools=/.qppsuite/bin
export PATH=$tools:/sbin:/usr/sbin:/bin:/usr/bin
export HOME=/root
user_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$tools
user_sh=/bin/sh
[ -x "$user_sh" ] || user_sh=$tools/sh

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /root
hostname qppsuite
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up

cd /root
if [ -f /etc/qppsuite/agent ]; then
	QPPSUITE_PATH=$user_path QPPSUITE_SH=$user_sh sh /etc/qppsuite/agent
elif [ -f /etc/qppsuite/cmd ]; then
	PATH=$user_path "$user_sh" /etc/qppsuite/cmd
else
	PATH=$user_path "$user_sh" /etc/qppsuite/workload.sh
fi
status=$?
cd /
echo "QPPSUITE-EXIT $status"
poweroff -f
