# python3: three named threads that each write, stat and remove a file.
import ctypes
import os
import threading
import time

libc = ctypes.CDLL(None)


def work(i: int) -> None:
    libc.prctl(15, f"worker{i}".encode(), 0, 0, 0)  # PR_SET_NAME: the name /proc/PID/task/TID/comm shows
    path = f"/tmp/t{i}.txt"
    with open(path, "w") as f:
        f.write(f"thread {i}\n")
    os.stat(path)
    time.sleep(0.02)
    os.unlink(path)


threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("python done")
