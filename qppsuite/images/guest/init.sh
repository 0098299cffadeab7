#!/bin/sh
# qppsuite guest /init: PID 1 of every qppsuite image.
#
# It prepares just enough of a system for the workload to be interesting to
# the analysis plugins (proc, sys, devtmpfs, a tmpfs, loopback), runs the
# user's --cmd when the run delivered one as /etc/qppsuite/cmd and the default
# workload otherwise, reports the exit status on a marker line the host
# searches for, and powers off through PSCI so the emulator stops cleanly
# instead of seeing PID 1 exit (which would panic the kernel).

export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
hostname qppsuite
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up

cd /root
if [ -f /etc/qppsuite/cmd ]; then
	sh /etc/qppsuite/cmd
else
	sh /etc/qppsuite/workload.sh
fi
status=$?
cd /
echo "QPPSUITE-EXIT $status"
poweroff -f
