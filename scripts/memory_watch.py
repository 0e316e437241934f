#!/usr/bin/env python3
"""Runs a command and samples, once a second, the memory of its esft processes and of the machine:
per process the peak RssAnon (anonymous: activations, optimizer state, buffers) and RssFile (mapped file
pages resident: the frozen weights' page-cache working set as the process sees it), and the machine's
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

def esft_pids():
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/comm").read().strip() == "esft": pids.append(int(p))
            except OSError: pass
    return pids

def main():
    out, cmd = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    start = time.time()
    proc = subprocess.Popen(cmd)
    peak = {}                      # pid -> {RssAnon, RssFile} peaks in KiB
    low_available, high_cached = None, 0
    while proc.poll() is None:
        for pid in esft_pids():
            s = kib(f"/proc/{pid}/status", {"RssAnon", "RssFile"})
            d = peak.setdefault(pid, {"RssAnon": 0, "RssFile": 0})
            for k in d: d[k] = max(d[k], s.get(k, 0))
        m = kib("/proc/meminfo", {"MemAvailable", "Cached"})
        if "MemAvailable" in m: low_available = m["MemAvailable"] if low_available is None else min(low_available, m["MemAvailable"])
        high_cached = max(high_cached, m.get("Cached", 0))
        time.sleep(1)
    gib = 1 / (1 << 20)
    record = {"command": cmd, "status": proc.returncode, "seconds": round(time.time() - start, 1),
              "processes": [{"pid": p, "peak_anonymous_gib": round(v["RssAnon"] * gib, 3),
                             "peak_file_resident_gib": round(v["RssFile"] * gib, 3)} for p, v in sorted(peak.items())],
              "lowest_mem_available_gib": round((low_available or 0) * gib, 3), "highest_page_cache_gib": round(high_cached * gib, 3)}
    with open(out, "w") as f: json.dump(record, f, indent=1)
    print(json.dumps(record))
    sys.exit(proc.returncode)

if __name__ == "__main__":
    main()
