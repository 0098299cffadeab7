# perl: files, pipes, unix/TCP/UDP sockets, fork/exec, signals, an unknown call, a killed child.
use strict;
use warnings;
use Socket;
my $buf;
open(my $f, '>', '/tmp/p.txt') or die; print $f "line1\nline2\n"; close $f;
open($f, '<', '/tmp/p.txt') or die; my @lines = <$f>; close $f;
rename '/tmp/p.txt', '/tmp/q.txt'; unlink '/tmp/q.txt';
pipe(my $r, my $w) or die;
my $pid = fork;
if (!$pid) { close $r; syswrite $w, "from child\n"; exit 7 }
close $w; sysread $r, $buf, 100; waitpid $pid, 0;
socketpair(my $s1, my $s2, AF_UNIX, SOCK_STREAM, 0) or die;
syswrite $s1, "ping"; sysread $s2, $buf, 4;
socket(my $srv, PF_INET, SOCK_STREAM, 0) or die;
setsockopt($srv, SOL_SOCKET, SO_REUSEADDR, 1);
bind($srv, sockaddr_in(0, INADDR_LOOPBACK)) or die; listen($srv, 1);
my ($port) = sockaddr_in(getsockname($srv));
socket(my $c, PF_INET, SOCK_STREAM, 0) or die;
connect($c, sockaddr_in($port, INADDR_LOOPBACK)) or die;
accept(my $a, $srv) or die; syswrite $c, "tcp data"; sysread $a, $buf, 8; close $c; close $a;
socket(my $u1, PF_INET, SOCK_DGRAM, 0) or die; bind($u1, sockaddr_in(0, INADDR_LOOPBACK)) or die;
my ($uport) = sockaddr_in(getsockname($u1));
socket(my $u2, PF_INET, SOCK_DGRAM, 0) or die;
send($u2, "udp data", 0, sockaddr_in($uport, INADDR_LOOPBACK)); recv($u1, $buf, 100, 0);
$SIG{USR1} = sub { }; kill 'USR1', $$;
$SIG{ALRM} = sub { }; alarm 1; select(undef, undef, undef, 0.05); alarm 0;
$pid = fork;
if (!$pid) { exec '/bin/echo', 'argone', 'argtwo' }
waitpid $pid, 0;
$pid = fork;
if (!$pid) { sleep 100; exit 0 }
select(undef, undef, undef, 0.1); kill 'TERM', $pid; waitpid $pid, 0;
syscall(452, 1, 2);
print "perl done\n";
