#!/usr/bin/env python3
"""Runs a command and samples, once a second, the memory of its esft processes (the command itself or its
descendants, e.g. mpirun's ranks) and of the machine:
per process the peak RssAnon (anonymous: activations, optimizer state, buffers), RssFile (mapped file
pages resident: the frozen weights' page-cache working set as the process sees it) and the bytes it made
the kernel read from disk (/proc/PID/io read_bytes, last sample), and the machine's
lowest MemAvailable and highest page cache (Cached). Prints one JSON line at the end and exits with the
command's status. Developer tool for scripts/lite_run.sh (Linux /proc only).

    scripts/memory_watch.py OUT.json -- COMMAND ARGS...
"""
import json, os, subprocess, sys, time

def kib(path, keys):
    out = {}
    try:
        for line in open(path):
            k, _, v = line.partition(":")
            if k in keys: out[k] = int(v.split()[0])
    except OSError: pass
    return out

def esft_pids(root):
    """esft processes descended from `root` (the command; mpirun's ranks too), not others on the machine."""
    parent, names = {}, {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                names[int(p)] = open(f"/proc/{p}/comm").read().strip()
                parent[int(p)] = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError): pass
    def descends(p):
        while p > 1:
            if p == root: return True
            p = parent.get(p, 0)
        return False
    return [p for p, n in names.items() if n == "esft" and descends(p)]

def main():
    out, cmd = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    start = time.time()
    proc = subprocess.Popen(cmd)
    peak = {}                      # pid -> {RssAnon, RssFile} peaks in KiB
    low_available, high_cached = None, 0
    while proc.poll() is None:
        for pid in esft_pids(proc.pid):
            s = kib(f"/proc/{pid}/status", {"RssAnon", "RssFile"})
            d = peak.setdefault(pid, {"RssAnon": 0, "RssFile": 0, "read_bytes": 0})
            for k in ("RssAnon", "RssFile"): d[k] = max(d[k], s.get(k, 0))
            try:  # bytes this process made the kernel read from disk (page-cache misses of its mapped weights)
                for line in open(f"/proc/{pid}/io"):
                    if line.startswith("read_bytes:"): d["read_bytes"] = max(d["read_bytes"], int(line.split()[1]))
            except OSError: pass
        m = kib("/proc/meminfo", {"MemAvailable", "Cached"})
        if "MemAvailable" in m: low_available = m["MemAvailable"] if low_available is None else min(low_available, m["MemAvailable"])
        high_cached = max(high_cached, m.get("Cached", 0))
        time.sleep(1)
    gib = 1 / (1 << 20)
    record = {"command": cmd, "status": proc.returncode, "seconds": round(time.time() - start, 1),
              "processes": [{"pid": p, "peak_anonymous_gib": round(v["RssAnon"] * gib, 3),
                             "peak_file_resident_gib": round(v["RssFile"] * gib, 3),
                             "disk_read_gib": round(v["read_bytes"] / (1 << 30), 2)} for p, v in sorted(peak.items())],
              "lowest_mem_available_gib": round((low_available or 0) * gib, 3), "highest_page_cache_gib": round(high_cached * gib, 3)}
    with open(out, "w") as f: json.dump(record, f, indent=1)
    print(json.dumps(record))
    sys.exit(proc.returncode)

if __name__ == "__main__":
    main()
