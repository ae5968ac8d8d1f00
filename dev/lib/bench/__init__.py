"""dev/bench: rbdsnapd measured side by side with its peers (issues 7, 14).

  cli        options, exit status
  run        the run: daemons, peers, cases in order, leftovers, output
  rpc        a small JSON-RPC client for the daemon's socket
  daemon     start, watch (RSS) and stop rbdsnapd with a bed's config
  ceph       images and snapshots through python3-rados/-rbd, `rados bench`
  peers      the command-line way (virsh + rbd) and the Python way
             (python3-libvirt + python3-rbd), each freezing and snapshotting
  freeze     case 1: the freeze window on the real guest, three ways
  e2e        cases 2-4: end-to-end, flatten throughput, background/cluster
  load       cases 5-6: 16 concurrent snapshots, memory, status latency
  multidisk  case 7: the freeze window of 1-8 disks at two mon paxos
             intervals, rbdsnapd beside Python's one-after-another
  stats      median/p90/max and the tables
  report     machine, versions, targets, docs/benchmarks.md (or a merge of
             some cases into it) and the plots

Runs with Debian's /usr/bin/python3 (python3-rados, -rbd, -libvirt,
-matplotlib); `dev/bench` brings up the bed and calls `python3 -m bench`.
"""
