#!/.qppsuite/bin/sh
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

# An image whose root file system is on the disk (image import --disk): load the modules that reach it (named in
# load order by /.qppsuite/root-disk), mount it, give it the toolkit, qppsuite's files and the mount points,
# and start again there: switch_root keeps PID 1.  The disk's writes stay in the emulator's memory.
if [ -f /.qppsuite/root-disk ]; then
	mount -t devtmpfs devtmpfs /dev
	while read -r module; do
		insmod "/.qppsuite/modules/$module.ko" || echo "qppsuite: cannot load $module"
	done </.qppsuite/root-disk
	tries=0
	until [ -b /dev/vda ] || [ "$tries" -ge 100 ]; do
		sleep 0.05
		tries=$((tries + 1))
	done
	if mount -t ext4 /dev/vda /sysroot; then
		mkdir -p /sysroot/.qppsuite /sysroot/etc/qppsuite /sysroot/proc /sysroot/sys /sysroot/dev /sysroot/tmp
		cp -a /.qppsuite/bin /.qppsuite/init /sysroot/.qppsuite/ && cp -a /etc/qppsuite/. /sysroot/etc/qppsuite/
		umount /dev
		exec switch_root /sysroot /.qppsuite/init
	fi
	echo "qppsuite: the root disk /dev/vda does not mount"
	echo "QPPSUITE-EXIT 1"
	poweroff -f
fi

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# a tmpfs on /tmp, unless the root file system has something there (an imported one's own /tmp is left as it is)
# (globbed by the shell itself: a program run here would be one more process in every run's process list)
kept=
for entry in /tmp/* /tmp/.[!.]* /tmp/..?*; do
	if [ -e "$entry" ] || [ -L "$entry" ]; then kept=yes; fi
done
[ -n "$kept" ] || mount -t tmpfs tmpfs /tmp
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
