"""The bed's record of what it started (state.json in the bed directory).

Written after every step so that `down` can stop a bed whose `up` failed
halfway, or whose caller was killed.
"""
import json
import os


class State:
    def __init__(self, root):
        self.path = os.path.join(root, "state.json")
        self.data = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.data = json.load(f)

    def set(self, key, value):
        self.data[key] = value
        self._save()

    def update(self, key, change):
        change(self.data[key])
        self._save()

    def get(self, key, default=None):
        return self.data.get(key, default)

    def _save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2)
        os.replace(tmp, self.path)
