"""The tiny real guest (placeholder until the guest image lands)."""


def boot(root, cluster, state):
    return {}


def down(record):
    return
