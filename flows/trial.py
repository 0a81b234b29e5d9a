"""The free-trial flow: greet, take name and email, deliver credentials, close.

greeting -> trial_request -> credentials -> closed, plus timeout and cancelled, which
the engine reaches from any open state (inactivity, "cancelar"), and a goodbye
("gracias, adiós"), which closes with reason goodbye.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine import Decision, Flow, Turn, step

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.IGNORECASE)


class Trial(Flow):
    name = "trial"

    # -- states --------------------------------------------------------------------------
    states = ["greeting", "trial_request", "credentials", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]
    # The reasons ops read in sessions.close_reason besides the engine's (goodbye, ...).
    close_reasons = {"credentials_delivered": "closed", "trial_refused": "closed"}
    credentials_state = "credentials"

    # -- texts ---------------------------------------------------------------------------
    texts = {
        "greeting": (
            "¡Hola{saludo_nombre}! 👋 Soy el asistente de Tertulia. "
            "¿Querés probar gratis nuestra plataforma? Respondé *sí* y arrancamos."
        ),
        "offer_again": "¿Querés la prueba gratis? Respondé *sí* para empezar o *chau* para salir.",
        "ask_name": "¡Genial! Para armar tu cuenta, ¿cómo te llamás?",
        "ask_name_again": "Decime tu nombre, por favor (por ejemplo: Juan Pérez).",
        "ask_email": "Gracias, {name}. Ahora pasame tu email, así te llega todo ahí también.",
        "invalid_email": (
            "Mmm, «{text}» no parece un email válido. 🤔 "
            "Fijate que tenga la forma nombre@dominio.com y mandámelo de nuevo."
        ),
        "declined": "¡Dale, no hay problema! Si más adelante querés probar, escribinos. 👋",
        "trial_refused": (
            "Ya tenés una prueba gratis activa o reciente con este número "
            "(vence el {trial_expires}). Solo podemos dar una cada {cooldown_days} días. "
            "Si necesitás más tiempo, escribinos a ventas@tertulia.example."
        ),
        "wait": "Estoy generando tus credenciales, un segundito… ⏳",
        "credentials": (
            "¡Listo, {name}! 🎉 Tu prueba gratis está activa.\n\n"
            "👤 Usuario: {username}\n🔑 Contraseña: {password}\n"
            "⏰ Vence: {expires}\n\n"
            "Para empezar, entrá a {login_url} con esos datos."
        ),
        "closing": "¡Que la disfrutes! Cerramos esta conversación; escribinos cuando quieras.",
        "options": (
            "Podés escribir *prueba* para pedir la prueba gratis, *cancelar* para dejarlo acá, "
            "o *chau* para despedirte."
        ),
    }

    # -- transitions ---------------------------------------------------------------------
    transitions = [
        {"trigger": "accept", "source": "greeting", "dest": "trial_request", "say": "ask_name"},
        {"trigger": "decline", "source": "greeting", "dest": "closed", "say": "declined",
         "reason": "goodbye"},
        {"trigger": "refuse", "source": "greeting", "dest": "closed", "say": "trial_refused",
         "reason": "trial_refused"},
        {"trigger": "take_name", "source": "trial_request", "dest": "trial_request",
         "say": "ask_email"},
        {"trigger": "take_email", "source": "trial_request", "dest": "credentials"},
        {"trigger": "deliver", "source": "credentials", "dest": "closed",
         "say": ["credentials", "closing"], "reason": "credentials_delivered"},
    ]
    reprompts = {
        "greeting": "offer_again",
        "trial_request": "ask_name_again",
        "credentials": "wait",
    }

    # -- steps ---------------------------------------------------------------------------
    def expects(self, state: str, context: Mapping[str, Any]) -> str | None:
        """While taking the details, a name and then an email: "Ana Chau" is a name."""
        if state != "trial_request":
            return None
        return "email" if "name" in context else "name"

    def start(self, turn: Turn) -> Decision:
        """Greet, by name when WhatsApp tells us one."""
        name = f", {turn.profile_name}" if turn.profile_name else ""
        return turn.stay("greeting", saludo_nombre=name)

    @step("greeting")
    def offer(self, turn: Turn) -> Decision:
        """A yes or a trial request moves on, unless this phone had a trial recently."""
        if turn.intent in ("afirmacion", "prueba"):
            previous = turn.recent_trial()
            if previous is not None:
                expires = f"{previous.expires_at:%d/%m/%Y %H:%M} UTC"
                return turn.move("refuse", trial_expires=expires,
                                 cooldown_days=turn.trial_cooldown.days)
            return turn.move("accept")
        if turn.intent == "negacion":
            return turn.move("decline")
        return turn.not_understood()

    @step("trial_request")
    def collect(self, turn: Turn) -> Decision:
        """Take the name first, then the email; a bad email is asked again with a hint."""
        text = turn.text.strip()
        if "name" not in turn.context:
            if not _looks_like_name(text):
                return turn.not_understood()
            turn.context["name"] = text.title()
            return turn.move("take_name")
        if not EMAIL.match(text):
            return turn.stay("invalid_email", text=text[:60])
        turn.context["email"] = text.lower()
        return turn.move("take_email")

    def credential_details(self, context: dict[str, Any]) -> dict[str, str]:
        """The provider makes the username from the name; it gets the email too."""
        return {"name": str(context.get("name", "")), "email": str(context.get("email", ""))}

    @step("credentials")
    def deliver(self, turn: Turn) -> Decision:
        """Hand over the credentials the provider issued, then close."""
        creds = turn.credentials
        if creds is None:
            return turn.stay("wait")
        return turn.move(
            "deliver", username=creds.username, password=creds.password,
            expires=f"{creds.expires_at:%d/%m/%Y %H:%M} UTC", login_url=creds.login_url,
        )


def _looks_like_name(text: str) -> bool:
    words = text.split()
    return 0 < len(words) <= 5 and all(w.replace("-", "").replace("'", "").isalpha() for w in words)
