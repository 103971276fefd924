#!/usr/bin/env python3
"""The run store's write pattern in SQLite alone: per save, with and without the
exclusive locking mode, the history indexes and the report column.

    python3 bench/runstore_writes.py
"""
import sqlite3, time, os, json
def run(exclusive, indexes, report):
    p='/tmp/conveyor-runstore-writes.db'
    for f in (p,p+'-wal',p+'-shm'):
        if os.path.exists(f): os.remove(f)
    c=sqlite3.connect(p, isolation_level=None)
    if exclusive: c.execute("PRAGMA locking_mode=EXCLUSIVE")
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL")
    c.execute("CREATE TABLE flow_runs (id TEXT PRIMARY KEY, request_id TEXT UNIQUE, client_queue TEXT, flow_file TEXT NOT NULL, flow_text TEXT NOT NULL, flow_base TEXT NOT NULL, state TEXT NOT NULL, snapshot TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, flow TEXT, report TEXT, started_ms INTEGER, ended_ms INTEGER)")
    c.execute("CREATE INDEX u ON flow_runs(state) WHERE state NOT IN ('Succeeded','Failed')")
    if indexes:
        c.execute("CREATE INDEX a ON flow_runs(created_ms,id)"); c.execute("CREATE INDEX b ON flow_runs(flow,created_ms,id)"); c.execute("CREATE INDEX s ON flow_runs(state,created_ms,id)")
    snap='x'*1500; rep='y'*1200; text='z'*400
    t=time.perf_counter()
    n=2000
    for i in range(n):
        c.execute("INSERT INTO flow_runs (id,request_id,client_queue,flow_file,flow_text,flow_base,state,snapshot,created_ms,updated_ms,flow) VALUES (?,?,?,?,?,?,?,?,?,?,?)",(f"k{i}-abc",f"r{i}","q","f",text,"/","Running",snap,i,i,"k"))
    for k in range(6):
        for i in range(n):
            st = "Succeeded" if k==5 else "Running"
            if report: c.execute("UPDATE flow_runs SET snapshot=?, state=?, report=?, ended_ms=?, updated_ms=? WHERE id=?",(snap,st,rep,None,k,f"k{i}-abc"))
            else: c.execute("UPDATE flow_runs SET snapshot=?, state=?, updated_ms=? WHERE id=?",(snap,st,k,f"k{i}-abc"))
    dt=time.perf_counter()-t
    return dt/(n*7)*1e6
for ex in (True,False):
  for ix in (False,True):
    for rp in (False,True):
      print(f"exclusive={ex} indexes={ix} report={rp}: {run(ex,ix,rp):.1f} us/op")
