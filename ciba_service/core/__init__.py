"""The shared core, standard library and cryptography only: the domain model (``model``), the
protocol errors (``errors``, one class per registered code), named security primitives
(``security``: identifiers, base64url, constant-time comparison, secret digests), RFC 3986
normalisation (``uri``), single-use records (``replay``), the approval's binding document and
challenge (``binding``), form parameters (``params``) and protocol identifiers (``protocol``).
Everything else may import it; it imports nothing of the package."""
