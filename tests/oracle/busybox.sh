# busybox ash: files, pipes, redirections, subshells, links, a background job.
cd /tmp
echo hello > a.txt
cat a.txt | tr a-z A-Z > b.txt
ls -l /tmp > /dev/null
mkdir -p d/e && touch d/e/f && rm -r d
for i in 1 2 3; do echo "$i" >> c.txt; done
wc -l c.txt
grep -c 2 c.txt
cp a.txt x.txt && mv x.txt y.txt && rm y.txt
ln -s a.txt l && readlink l && rm l
test -e /nonexistent || echo missing
(sleep 0.05; echo sub) &
wait
cat /proc/self/stat > /dev/null
rm -f a.txt b.txt c.txt
