"""The rbdsnapd test bed: a throwaway Ceph cluster, libvirtd, and a tiny guest.

Everything here is started and stopped by the project's own scripts so that a
test run never touches a real cluster or a real VM. See dev/testbed --help.
"""
