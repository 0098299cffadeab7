# pigz: compress and decompress with two threads.
head -c 200000 /dev/urandom > /tmp/r.bin
pigz -p 2 -b 32 -k /tmp/r.bin
pigz -d -p 2 -c /tmp/r.bin.gz > /tmp/r2.bin
cmp /tmp/r.bin /tmp/r2.bin && echo pigz roundtrip ok
