"""TLS certificates for the admission webhook.

Three modes:

- ``self-signed`` (default): the operator keeps its own CA and serving certificate in a Secret
  (``<service>-cert``, type ``kubernetes.io/tls`` plus ``ca.crt``) in its namespace, so every replica
  serves the same certificate. The first replica creates it (a lost create race just reads the
  winner's); a replica that finds it within 30 days of expiry replaces it (a lost update race reads the
  winner's). The CA bundle is patched into the webhook configurations, then the files are written to
  the cert dir, where the server picks them up on the next handshake.
- ``cert-manager``: cert-manager mounts ``tls.crt``/``tls.key`` into the cert dir and its cainjector
  fills the caBundle; the operator only serves what is mounted and reloads it when it changes.
- ``files``: like ``cert-manager``, for certificates provided by any other means.

Generation and the rotation decision are pure functions of their inputs (time is passed in); the
Secret and webhook-configuration I/O lives in ``changejob.kube.certstore``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s_client

from changejob.kube import certstore

log = logging.getLogger(__name__)

VALIDITY = dt.timedelta(days=365)
ROTATE_BEFORE = dt.timedelta(days=30)
BACKDATE = dt.timedelta(minutes=5)  # tolerate clock skew between the operator and the API server
MODES = ("self-signed", "cert-manager", "files")
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"


@dataclasses.dataclass(frozen=True, slots=True)
class Bundle:
    """PEM material: the CA bundle (new CA first, a still-valid previous one after it), cert, key."""

    ca_crt: bytes
    tls_crt: bytes
    tls_key: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Files:
    """Where the TLS server reads its certificate and key."""

    cert_file: Path
    key_file: Path


@dataclasses.dataclass(frozen=True, slots=True)
class Names:
    """The names the serving certificate must cover."""

    dns: tuple[str, ...]
    ips: tuple[str, ...] = ()


def service_names(*, service: str, namespace: str, loopback: bool = False) -> Names:
    """In-cluster DNS names of the webhook Service; 127.0.0.1/localhost too when ``loopback``."""
    dns = [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]
    ips: tuple[str, ...] = ()
    if loopback:
        dns.append("localhost")
        ips = ("127.0.0.1",)
    return Names(dns=tuple(dns), ips=ips)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _issue_ca(
    *, common_name: str, now: dt.datetime, validity: dt.timedelta
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    subject = _name(common_name)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue_serving(
    *,
    names: Names,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    validity: dt.timedelta,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names.dns]
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in names.ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names.dns[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _first_valid(pem: bytes, *, now: dt.datetime) -> bytes:
    """The first certificate of a PEM bundle that has not expired at ``now`` (or nothing)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return b""
    return next((_pem(c) for c in certs if c.not_valid_after_utc > now), b"")


def issue(*, names: Names, now: dt.datetime, validity: dt.timedelta = VALIDITY, previous_ca: bytes = b"") -> Bundle:
    """A fresh CA and a serving certificate for ``names``, both valid for ``validity``.

    The first certificate of ``previous_ca`` is kept in the bundle while it is still valid: replicas
    that have not yet picked up the new certificate keep being trusted during a rotation.
    """
    # a distinct subject per CA: during a rotation the bundle holds two, and chain building must
    # not confuse them
    ca_name = f"kube-changejob-ca-{now:%Y%m%d}-{secrets.token_hex(4)}"
    ca, ca_key = _issue_ca(common_name=ca_name, now=now, validity=validity)
    cert, key = _issue_serving(names=names, ca=ca, ca_key=ca_key, now=now, validity=validity)
    previous = _first_valid(previous_ca, now=now)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Bundle(ca_crt=_pem(ca) + previous, tls_crt=_pem(cert), tls_key=key_pem)


def not_after(pem: bytes) -> dt.datetime:
    """Expiry of the first certificate in ``pem``."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def covers(pem: bytes, names: Names) -> bool:
    """Whether the certificate's SANs include every name in ``names``."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(names.dns) <= dns and set(names.ips) <= ips


def needs_rotation(
    bundle: Bundle | None, *, names: Names, now: dt.datetime, rotate_before: dt.timedelta = ROTATE_BEFORE
) -> bool:
    """True when there is no usable certificate for ``names`` valid beyond ``now + rotate_before``."""
    if bundle is None or not bundle.ca_crt or not bundle.tls_key:
        return True
    try:
        return not_after(bundle.tls_crt) - rotate_before <= now or not covers(bundle.tls_crt, names)
    except ValueError:
        return True


def to_secret_data(bundle: Bundle) -> dict[str, bytes]:
    return {CERT_FILE: bundle.tls_crt, KEY_FILE: bundle.tls_key, CA_FILE: bundle.ca_crt}


def from_secret_data(data: Mapping[str, bytes]) -> Bundle | None:
    if not all(data.get(k) for k in (CERT_FILE, KEY_FILE, CA_FILE)):
        return None
    return Bundle(ca_crt=data[CA_FILE], tls_crt=data[CERT_FILE], tls_key=data[KEY_FILE])


def _write_atomically(path: Path, content: bytes, *, mode: int) -> bool:
    """Replace ``path`` with ``content`` unless it already holds exactly that; True if written."""
    try:
        if path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, content)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


def write_files(bundle: Bundle, *, cert_dir: Path) -> Files:
    """Write key, CA and cert into ``cert_dir`` (key first, cert last: the server reloads on the cert)."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    files = Files(cert_file=cert_dir / CERT_FILE, key_file=cert_dir / KEY_FILE)
    _write_atomically(files.key_file, bundle.tls_key, mode=0o600)
    _write_atomically(cert_dir / CA_FILE, bundle.ca_crt, mode=0o644)
    _write_atomically(files.cert_file, bundle.tls_crt, mode=0o644)
    return files


def ensure(
    *,
    store: certstore.SecretStore,
    webhooks: certstore.WebhookConfigs,
    names: Names,
    cert_dir: Path,
    now: dt.datetime,
) -> Bundle:
    """One pass of the self-signed flow: create or rotate the Secret, patch caBundle, write files.

    The caBundle is patched before the files are written, so the API server trusts a certificate
    before this replica serves it.
    """
    stored = store.read()
    bundle = from_secret_data(stored.data) if stored else None
    if needs_rotation(bundle, names=names, now=now):
        fresh = to_secret_data(issue(names=names, now=now, previous_ca=bundle.ca_crt if bundle else b""))
        if stored is None:
            stored = store.create(fresh)
        else:
            log.info("rotating webhook certificate in secret %s", store.name)
            stored = store.replace(fresh, resource_version=stored.resource_version)
        bundle = from_secret_data(stored.data)
    if bundle is None:
        raise RuntimeError(f"secret {store.namespace}/{store.name} holds no usable certificate")
    webhooks.ensure_ca_bundle(bundle.ca_crt)
    write_files(bundle, cert_dir=cert_dir)
    return bundle


class SelfSigned:
    """Keeps the operator-managed certificate current: once at start, then every ``interval``."""

    def __init__(
        self,
        *,
        store: certstore.SecretStore,
        webhooks: certstore.WebhookConfigs,
        names: Names,
        cert_dir: Path,
        interval: float = 300.0,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._store = store
        self._webhooks = webhooks
        self._names = names
        self._cert_dir = cert_dir
        self._interval = interval
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.files = Files(cert_file=cert_dir / CERT_FILE, key_file=cert_dir / KEY_FILE)

    def refresh(self) -> Bundle:
        """Create, rotate or pick up (from another replica) the certificate now."""
        return ensure(
            store=self._store,
            webhooks=self._webhooks,
            names=self._names,
            cert_dir=self._cert_dir,
            now=self._clock(),
        )

    def start(self) -> Files:
        """Refresh synchronously (the server needs the files), then keep refreshing in a thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="webhook-certs", daemon=True)
        self._thread.start()
        return self.files

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.refresh()
            except Exception:  # keep serving the current certificate; try again next interval
                log.exception("could not refresh the webhook certificate")


def mounted(*, cert_dir: Path, cert_file: str = CERT_FILE, key_file: str = KEY_FILE) -> Files:
    """The files of the ``cert-manager`` and ``files`` modes; they must exist (the server reloads them)."""
    files = Files(cert_file=cert_dir / cert_file, key_file=cert_dir / key_file)
    missing = [str(p) for p in (files.cert_file, files.key_file) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"webhook certificate files missing: {', '.join(missing)}")
    return files


class Mounted:
    """Certificates provided from outside (``cert-manager`` or ``files`` mode): only served."""

    def __init__(self, *, cert_dir: Path, cert_file: str = CERT_FILE, key_file: str = KEY_FILE) -> None:
        self.files = Files(cert_file=cert_dir / cert_file, key_file=cert_dir / key_file)

    def start(self) -> Files:
        """Check the files exist; the server reloads them whenever they change."""
        return mounted(
            cert_dir=self.files.cert_file.parent,
            cert_file=self.files.cert_file.name,
            key_file=self.files.key_file.name,
        )

    def stop(self) -> None:
        """Nothing runs in this mode."""


def for_mode(
    *,
    mode: str,
    cert_dir: Path,
    api_client: k8s_client.ApiClient | None = None,
    namespace: str = "",
    service: str = "",
    validating: str | None = None,
    mutating: str | None = None,
    loopback: bool = False,
) -> SelfSigned | Mounted:
    """The certificate keeper for ``mode``; ``start()`` it before the server, ``stop()`` it after.

    ``self-signed`` needs the API client, the operator's namespace, the webhook Service's name (the
    Secret is ``<service>-cert``) and the webhook configuration names whose caBundle it maintains.
    """
    if mode not in MODES:
        raise ValueError(f"unknown webhook certificate mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode != "self-signed":
        return Mounted(cert_dir=cert_dir)
    if api_client is None or not namespace or not service:
        raise ValueError("self-signed certificates need an API client, a namespace and a service name")
    return SelfSigned(
        store=certstore.SecretStore(api_client, namespace=namespace, name=f"{service}-cert"),
        webhooks=certstore.WebhookConfigs(api_client, validating=validating, mutating=mutating),
        names=service_names(service=service, namespace=namespace, loopback=loopback),
        cert_dir=cert_dir,
    )
