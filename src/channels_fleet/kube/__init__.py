"""Secrets made once inside the cluster: ``channels-fleet secrets ensure``.

The chart renders no secret value (two renders with the same values are identical, as Argo CD and
``helm template | kubectl apply`` need). A Job (a Helm pre-install/pre-upgrade hook, a plain Job
under ``kubectl apply``) runs this command with its own service account: each Secret it is given is
created when absent and gets the keys it lacks; a value that exists is never changed.

Modules: ``client`` (the API server over HTTPS with the pod's service account token, standard
library only), ``kinds`` (what a value is made of: the registry below), ``ensure`` (create or add
the missing keys, never overwrite), ``command`` (the CLI).

A kind is a function registered by name in ``kinds.KINDS`` (one line: ``"tls": make_tls,``)::

    def make(item: Item, current: Mapping[str, bytes]) -> dict[str, bytes]

``item`` is one requested value (``item.secret``, ``item.key``, ``item.kind``, ``item.options``: the
JSON object the chart passed, e.g. ``{"dnsNames": [...]}``); ``current`` is the Secret's data as it
is now (decoded; empty when the Secret does not exist yet). It returns the keys to add: nothing
when ``current`` already holds what the item stands for. A kind may return several keys
(``tls``: ``ca.crt``, ``tls.crt``, ``tls.key``). Ensure never changes an existing key: it fails,
naming the key, when a kind returns one that the Secret already has.
"""
