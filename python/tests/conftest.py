"""A real local cluster (three `tern` node processes on loopback) shared by the tests."""

import pytest

import tern


@pytest.fixture(scope="session")
def cluster():
    with tern.LocalCluster(n_workers=3) as local:
        yield local


@pytest.fixture(scope="session")
def client(cluster):
    with tern.Client(cluster) as c:
        yield c
