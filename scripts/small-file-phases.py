#!/usr/bin/env python3
"""Where a small file's time goes on a mount: open(O_CREAT), one write, close,
timed apart. Usage: scripts/small-file-phases.py DIR [FILES] (FILES 300)."""
import os, sys, time, statistics
d=sys.argv[1]; n=int(sys.argv[2]) if len(sys.argv)>2 else 300
os.makedirs(d, exist_ok=True)
data=os.urandom(128*1024)
c=[];w=[];cl=[]
t0=time.time()
for i in range(n):
    a=time.perf_counter(); fd=os.open(f"{d}/f{i}", os.O_CREAT|os.O_WRONLY|os.O_TRUNC, 0o644)
    b=time.perf_counter(); os.write(fd,data)
    e=time.perf_counter(); os.close(fd)
    f=time.perf_counter()
    c.append(b-a); w.append(e-b); cl.append(f-e)
tot=time.time()-t0
ms=lambda v: f"{statistics.median(v)*1000:.2f}"
print(f"{d}: {n/tot:.0f} files/s  create {ms(c)} ms  write {ms(w)} ms  close {ms(cl)} ms (medians)")
