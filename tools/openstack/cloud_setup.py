"""Sets up the loopback cloud through its APIs; run by osloop.sh with /usr/bin/python3. Idempotent.

  cloud_setup.py identity      projects, users, roles and the service catalog (Keystone, as admin)
  cloud_setup.py volume-types  the default volume type and the encrypted type (Cinder, as admin)
  cloud_setup.py quotas        Cinder's default quotas, raised for tests that run side by side
  cloud_setup.py volume-pool   exits 0 once cinder-scheduler knows the loopfile pool (it can place volumes)
  cloud_setup.py nova-identity users, services and endpoints of Nova, Placement and Neutron (OSLOOP_NOVA=1)
  cloud_setup.py nova          the tests' flavor, and Neutron's warm-up request (OSLOOP_NOVA=1, every up)

Passwords come from the environment (OSLOOP_*), never from argv. One keystoneclient session does
what would take ~30 `openstack` CLI calls of 1-4 s each.
"""
import os
import sys

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

AUTH_URL = "http://127.0.0.1:5000/v3"
REGION = "RegionOne"
SERVICES = [  # (user and service name, service type, public endpoint)
    ("glance", "image", "http://127.0.0.1:9292"),
    ("cinder", "volumev3", "http://127.0.0.1:8776/v3/%(project_id)s"),
    ("barbican", "key-manager", "http://127.0.0.1:9311"),
]
NOVA_SERVICES = [  # only with OSLOOP_NOVA=1
    ("nova", "compute", "http://127.0.0.1:8774/v2.1"),
    ("placement", "placement", "http://127.0.0.1:8778"),
    ("neutron", "network", "http://127.0.0.1:9696"),
]
FLAVOR = {"id": "coffer-tiny", "name": "coffer.tiny", "ram": 64, "disk": 1, "vcpus": 1}


def admin_session():
    auth = v3.Password(auth_url=AUTH_URL, username="admin", password=os.environ["OSLOOP_ADMIN_PASSWORD"],
                       project_name="admin", user_domain_name="Default", project_domain_name="Default")
    return ks_session.Session(auth=auth)


def find_or_create(manager, name, **create):
    found = [item for item in manager.list(**({"domain": create["domain"]} if "domain" in create else {}))
             if item.name == name]
    return found[0] if found else manager.create(name=name, **create)


def setup_identity(services=SERVICES, demo=True):
    from keystoneclient.v3 import client

    keystone = client.Client(session=admin_session(), interface="public")
    domain = keystone.domains.get("default")
    roles = {name: find_or_create(keystone.roles, name) for name in ("admin", "member", "service", "creator")}
    service_project = find_or_create(keystone.projects, "service", domain=domain)
    demo_project = find_or_create(keystone.projects, "demo", domain=domain)

    def user(name, password, project, role_names):
        found = keystone.users.list(domain=domain, name=name)
        account = found[0] if found else keystone.users.create(name=name, domain=domain, password=password,
                                                               default_project=project)
        keystone.users.update(account, password=password)  # the password in secrets.env is the truth
        for role in role_names:
            keystone.roles.grant(roles[role], user=account, project=project)

    # member + creator: Barbican's policy lets creators store secrets.
    if demo:
        user("demo", os.environ["OSLOOP_DEMO_PASSWORD"], demo_project, ["member", "creator"])
    # The service role: Cinder takes Nova's service token (send_service_user_token) only with it.
    for name, service_type, url in services:
        user(name, os.environ["OSLOOP_SERVICE_PASSWORD"], service_project, ["admin", "service"])
        services = [s for s in keystone.services.list(type=service_type) if s.name == name]
        service = services[0] if services else keystone.services.create(name=name, type=service_type)
        endpoints = keystone.endpoints.list(service=service, interface="public", region=REGION)
        if not endpoints:
            keystone.endpoints.create(service=service, url=url, interface="public", region=REGION)


def setup_volume_types():
    from cinderclient import client

    cinder = client.Client("3", session=admin_session(), region_name=REGION)
    existing = {t.name: t for t in cinder.volume_types.list(is_public=None)}
    default_name = os.environ["OSLOOP_DEFAULT_VOLUME_TYPE"]
    encrypted_name = os.environ["OSLOOP_ENCRYPTED_VOLUME_TYPE"]
    for name in (default_name, encrypted_name):
        if name not in existing:
            existing[name] = cinder.volume_types.create(name, is_public=True)
            existing[name].set_keys({"volume_backend_name": "loopfile"})
    luks = existing[encrypted_name]
    if not getattr(cinder.volume_encryption_types.get(luks), "provider", None):
        cinder.volume_encryption_types.create(luks, {"provider": "luks", "cipher": "aes-xts-plain64",
                                                     "key_size": 256, "control_location": "front-end"})


def setup_quotas():
    # Two test files at a time share the demo project: Cinder's default 10 volumes, snapshots and
    # backups a project would let one starve the other. A project's own quota (tests set some) wins.
    from cinderclient import client

    cinder = client.Client("3", session=admin_session(), region_name=REGION)
    cinder.quota_classes.update("default", volumes=60, snapshots=60, backups=100)


def volume_pool_known():
    # Heartbeats in the database are not enough: the scheduler places volumes only on pools
    # cinder-volume has reported to it, and fails every create until then.
    from cinderclient import client

    cinder = client.Client("3", session=admin_session(), region_name=REGION)
    if not any(pool.name.endswith("#loopfile") for pool in cinder.pools.list()):
        sys.exit("cinder-scheduler knows no loopfile pool yet")


def setup_nova():
    session = admin_session()
    compute = {"service_type": "compute", "interface": "public", "region_name": REGION}
    network = {"service_type": "network", "interface": "public", "region_name": REGION}
    # The first GET /v2.0/ports after neutron-server starts is a 500 (SQLAlchemy mappers not configured
    # yet); any other query first avoids it, so Nova's first server list does not fail.
    session.get("/v2.0/networks", endpoint_filter=network)
    session.get("/v2.0/ports?limit=1", endpoint_filter=network)
    flavors = session.get("/flavors?is_public=None", endpoint_filter=compute).json()["flavors"]
    if not any(flavor["id"] == FLAVOR["id"] for flavor in flavors):
        session.post("/flavors", json={"flavor": {**FLAVOR, "os-flavor-access:is_public": True}},
                     endpoint_filter=compute)


if __name__ == "__main__":
    steps = {"identity": setup_identity, "volume-types": setup_volume_types, "quotas": setup_quotas,
             "volume-pool": volume_pool_known,
             "nova-identity": lambda: setup_identity(NOVA_SERVICES, demo=False), "nova": setup_nova}
    if len(sys.argv) != 2 or sys.argv[1] not in steps:
        sys.exit("usage: cloud_setup.py " + "|".join(steps))
    steps[sys.argv[1]]()
