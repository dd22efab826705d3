"""Python's smtplib (a client no one here wrote) against a running maildr site.

Usage: smtplib_client.py ENDPOINTS_JSON
Sends the mail the calling test then looks for in the store, and checks every
refusal a real client meets. Prints one line per check and 'N passed, N failed'.
Exit status 1 when any check failed.
"""
import json
import smtplib
import ssl
import sys

from checks import check, report

endpoints = json.load(open(sys.argv[1]))
HOST = "127.0.0.1"
port = {k: int(v.rsplit(":", 1)[1]) for k, v in endpoints["smtp"].items()}
ctx = ssl.create_default_context(cafile=endpoints["tls_ca"])
ctx.check_hostname = False  # the site certificate names mail.example.test, localhost and 127.0.0.1



def message(subject, sender="alice@example.test", to="bob@example.test"):
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\nbody of {subject}\r\n"


def refused_recipient(s, rcpt, subject):
    """Send to `rcpt` alone, which must be refused; the refusal's (code, text)."""
    try:
        s.sendmail("carol@outside.test", [rcpt], message(subject))
    except smtplib.SMTPRecipientsRefused as e:
        return e.recipients[rcpt]
    raise AssertionError(f"{rcpt} accepted")


@check("submission with STARTTLS and AUTH PLAIN delivers")
def _():
    with smtplib.SMTP(HOST, port["submission"], timeout=30) as s:
        s.ehlo()
        assert "auth" not in s.esmtp_features, "AUTH offered before TLS"
        s.starttls(context=ctx)
        s.ehlo()
        assert "PLAIN" in s.esmtp_features.get("auth", ""), s.esmtp_features
        s.login("alice@example.test", "alice-pw")
        refused = s.sendmail("alice@example.test", ["bob@example.test"], message("smtplib-starttls-plain"))
        assert refused == {}, refused


@check("submission with STARTTLS and AUTH LOGIN delivers")
def _():
    with smtplib.SMTP(HOST, port["submission"], timeout=30) as s:
        s.starttls(context=ctx)
        s.ehlo()
        s.user, s.password = "alice@example.test", "alice-pw"
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235, code
        s.sendmail("alice@example.test", ["bob@example.test"], message("smtplib-starttls-login"))


@check("implicit TLS submission delivers, also from an alias the user owns")
def _():
    with smtplib.SMTP_SSL(HOST, port["submissions"], context=ctx, timeout=30) as s:
        s.login("alice@example.test", "alice-pw")
        s.sendmail("sales@example.test", ["bob@example.test"], message("smtplib-implicit-tls", sender="sales@example.test"))


@check("MX delivers from outside to an account and through an alias")
def _():
    with smtplib.SMTP(HOST, port["mx"], timeout=30) as s:
        refused = s.sendmail("carol@outside.test", ["sales@example.test"], message("smtplib-mx", sender="carol@outside.test", to="sales@example.test"))
        assert refused == {}, refused


@check("a wrong password gets 535 5.7.8")
def _():
    with smtplib.SMTP(HOST, port["submission"], timeout=30) as s:
        s.starttls(context=ctx)
        try:
            s.login("alice@example.test", "wrong")
            raise AssertionError("login with a wrong password succeeded")
        except smtplib.SMTPAuthenticationError as e:
            assert e.smtp_code == 535 and b"5.7.8" in e.smtp_error, e


@check("an unknown user cannot log in")
def _():
    with smtplib.SMTP_SSL(HOST, port["submissions"], context=ctx, timeout=30) as s:
        try:
            s.login("mallory@example.test", "alice-pw")
            raise AssertionError("unknown user logged in")
        except smtplib.SMTPAuthenticationError as e:
            assert e.smtp_code == 535, e


@check("submission refuses a sender the account does not own with 553 5.7.1")
def _():
    with smtplib.SMTP_SSL(HOST, port["submissions"], context=ctx, timeout=30) as s:
        s.login("alice@example.test", "alice-pw")
        try:
            s.sendmail("bob@example.test", ["bob@example.test"], message("smtplib-forged", sender="bob@example.test"))
            raise AssertionError("forged sender accepted")
        except smtplib.SMTPSenderRefused as e:
            assert e.smtp_code == 553 and b"5.7.1" in e.smtp_error, e


@check("submission without login refuses mail with 530")
def _():
    with smtplib.SMTP(HOST, port["submission"], timeout=30) as s:
        s.starttls(context=ctx)
        try:
            s.sendmail("alice@example.test", ["bob@example.test"], message("smtplib-unauthenticated"))
            raise AssertionError("unauthenticated submission accepted")
        except smtplib.SMTPSenderRefused as e:
            assert e.smtp_code == 530, e


@check("login is impossible without TLS")
def _():
    with smtplib.SMTP(HOST, port["submission"], timeout=30) as s:
        try:
            s.login("alice@example.test", "alice-pw")
            raise AssertionError("login without TLS succeeded")
        except smtplib.SMTPNotSupportedError:
            pass


@check("MX refuses relaying with 550 5.7.1 and unknown users with 550 5.1.1")
def _():
    with smtplib.SMTP(HOST, port["mx"], timeout=30) as s:
        code, text = refused_recipient(s, "dave@elsewhere.test", "smtplib-relay")
        assert code == 550 and b"5.7.1" in text, (code, text)
        s.rset()
        code, text = refused_recipient(s, "nobody@example.test", "smtplib-unknown")
        assert code == 550 and b"5.1.1" in text, (code, text)


@check("an oversize message is refused with 552")
def _():
    with smtplib.SMTP(HOST, port["mx"], timeout=30) as s:
        big = message("smtplib-oversize", sender="carol@outside.test") + "x" * 1200 + "\r\n"
        try:
            s.sendmail("carol@outside.test", ["bob@example.test"], big)
            raise AssertionError("oversize accepted")
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as e:
            assert e.smtp_code == 552, e


report()
