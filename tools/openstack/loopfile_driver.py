"""A Cinder volume driver whose volumes are sparse files, for the loopback cloud (osloop.sh).

The machine has no device-mapper (so no LVM) and no iSCSI target. Each volume is
<loopfile_dir>/volume-<id>, each snapshot snapshot-<id>. initialize_connection returns os-brick's
LOCAL connection ('local'), so cinder-backup really reads and writes the bytes: device_path is the
file itself, or, for Nova (whose libvirt driver attaches only block devices), a loop device over
it that terminate_connection and delete_volume release. The API, scheduler, RPC, state machine,
quotas and key manager are stock Cinder. It subclasses the fake driver that python3-cinder ships,
which stubs out everything LVM would run.
Only cinder-volume has this file on its PYTHONPATH.
"""
import os
import subprocess

from oslo_config import cfg

from cinder.image import image_utils
from cinder.tests import fake_driver
from cinder.volume import configuration
from cinder.volume import volume_utils

loopfile_opts = [cfg.StrOpt("loopfile_dir", help="Folder of the volume and snapshot files")]
cfg.CONF.register_opts(loopfile_opts, group=configuration.SHARED_CONF_GROUP)

GIB = 1024**3
CHUNK = 1024**2


def copy_sparse(source, destination, size_bytes):
    """Copies a file, leaving all-zero chunks as holes, and sizes the copy to size_bytes."""
    with open(source, "rb") as reader, open(destination, "wb") as writer:
        while True:
            chunk = reader.read(CHUNK)
            if not chunk:
                break
            if chunk.count(0) == len(chunk):
                writer.seek(len(chunk), os.SEEK_CUR)
            else:
                writer.write(chunk)
        writer.truncate(max(size_bytes, writer.tell()))


class LoopFileDriver(fake_driver.FakeLoggingVolumeDriver):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(loopfile_opts)
        self.backend_name = self.configuration.safe_get("volume_backend_name") or "loopfile"
        self.protocol = "local"

    def _path(self, name):
        return os.path.join(self.configuration.loopfile_dir, name)

    def do_setup(self, context):
        os.makedirs(self.configuration.loopfile_dir, exist_ok=True)

    def local_path(self, volume, vg=None):
        return self._path(volume.name)

    def create_volume(self, volume):
        with open(self._path(volume.name), "wb") as writer:
            writer.truncate(volume.size * GIB)

    def delete_volume(self, volume):
        self._release_loop_devices(self._path(volume.name))
        self._remove(volume.name)

    def extend_volume(self, volume, new_size):
        os.truncate(self._path(volume.name), new_size * GIB)

    def create_snapshot(self, snapshot):
        copy_sparse(self._path(snapshot.volume_name), self._path(snapshot.name), snapshot.volume_size * GIB)

    def delete_snapshot(self, snapshot):
        self._remove(snapshot.name)

    def create_volume_from_snapshot(self, volume, snapshot):
        copy_sparse(self._path(snapshot.name), self._path(volume.name), volume.size * GIB)

    def create_cloned_volume(self, volume, src_vref):
        copy_sparse(self._path(src_vref.name), self._path(volume.name), volume.size * GIB)

    # Image copies as Cinder's LVM driver makes them (the fake driver's are no-ops): a volume
    # uploaded to Glance (os-volume_upload_image), and a volume created from an image.
    def copy_volume_to_image(self, context, volume, image_service, image_meta):
        volume_utils.upload_volume(context, image_service, image_meta, self._path(volume.name), volume)

    def copy_image_to_volume(self, context, volume, image_service, image_id):
        image_utils.fetch_to_raw(
            context,
            image_service,
            image_id,
            self._path(volume.name),
            self.configuration.volume_dd_blocksize,
            size=volume["size"],
        )

    def initialize_connection(self, volume, connector):
        device = self._path(volume.name)
        # Nova's attachment_update adds the guest's device name; cinder-backup's connector has none.
        if connector and connector.get("mountpoint"):
            device = self._loop_device(device)
        return {"driver_volume_type": "local", "data": {"device_path": device, "access_mode": "rw"}}

    def terminate_connection(self, volume, connector, **kwargs):
        # A forced detach has no connector; cinder-backup's must not take Nova's device away.
        if not connector or connector.get("mountpoint"):
            self._release_loop_devices(self._path(volume.name))

    def initialize_connection_snapshot(self, snapshot, connector, **kwargs):
        return {"driver_volume_type": "local", "data": {"device_path": self._path(snapshot.name), "access_mode": "ro"}}

    def _update_volume_stats(self):
        super()._update_volume_stats()
        for pool in self._stats["pools"]:
            pool["reserved_percentage"] = 0
            pool["replication_enabled"] = False
            pool["group_replication_enabled"] = False

    def _loop_devices(self, file):
        listed = subprocess.run(["losetup", "--noheadings", "--output", "NAME", "--associated", file],
                                check=True, capture_output=True, text=True).stdout
        return [line.strip() for line in listed.splitlines() if line.strip()]

    def _loop_device(self, file):
        """The loop device over file, made once: Nova may initialize the same attachment again."""
        found = self._loop_devices(file)
        if found:
            return found[0]
        return subprocess.run(["losetup", "--find", "--show", file],
                              check=True, capture_output=True, text=True).stdout.strip()

    def _release_loop_devices(self, file):
        for device in self._loop_devices(file):
            subprocess.run(["losetup", "--detach", device], check=False)

    def _remove(self, name):
        try:
            os.remove(self._path(name))
        except FileNotFoundError:
            pass
