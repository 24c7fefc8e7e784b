"""Cluster security: mutual TLS, join-token bootstrap, identity and roles.

* ``pki``: EC P-256 keys, the cluster CA, CSRs and certificates (``cryptography``).
* ``tokens``: join tokens ``EDDL1.<CA hash>.<id>.<secret>``; only a hash of the secret is kept.
* ``authority``: the leader's certificate authority: enrolment, renewal, revocation by serial.
* ``tls``: a node's identity on disk and the gRPC server and channel credentials built from it.
* ``authz``: the one authorization point, a server interceptor with a table method -> roles.
* ``sessions``: the per-node session credential of ``--insecure`` mode.
* ``bootstrap``: the Security service (GetCA, Enrol on the bootstrap port; Renew and
  WatchRevocations over mTLS).
* ``revocations``: the root's revocation list pushed to sub-leaders, and a sub-leader's copy.
* ``enrol``: a node's side: make a key, check the CA against the token, enrol, renew.
"""
