"""Booking a turn at a barber's: pick a service, then a day, confirm, close as booked.

service -> day -> confirm -> closed (reason booked), plus timeout and cancelled, which
the engine reaches from any open state, and a goodbye. Every question offers its
answers as choices: WhatsApp buttons or a list where TWILIO_CONTENT_SIDS names a
template for the text, numbered lines everywhere else. A tap, the number or the words
all reach the step as `turn.choice`.
"""

from __future__ import annotations

from engine import Decision, Flow, Turn, step

SERVICES = {"corte": "Corte", "barba": "Barba", "color": "Color"}
DAYS = {"lun": "Lunes 10:00", "mie": "Miércoles 15:00", "vie": "Viernes 18:00"}


class Booking(Flow):
    name = "booking"

    # -- states --------------------------------------------------------------------------
    states = ["service", "day", "confirm", "closed", "timeout", "cancelled"]
    initial = "service"
    final = ["closed", "timeout", "cancelled"]
    close_reasons = {"booked": "closed"}

    # -- texts ---------------------------------------------------------------------------
    texts = {
        "greeting": (
            "¡Hola{saludo_nombre}! 💈 Soy el asistente de turnos de Barbería Tertulia. "
            "¿Qué servicio querés?"
        ),
        "ask_service": "¿Qué servicio querés? Elegí una opción.",
        "ask_day": "Buenísimo: {service}. ¿Qué día te queda bien?",
        "ask_day_again": "Elegí uno de los días, por favor.",
        "confirm": "¿Confirmamos {service} el {day}?",
        "confirm_again": "¿Lo confirmamos? Respondé *sí* o *no*.",
        "booked": "¡Listo! Te esperamos el {day} para {service}. Si no podés venir, avisanos. 👋",
        "options": (
            "Elegí una opción con su número, escribí *cancelar* para dejarlo acá, "
            "o *chau* para despedirte."
        ),
    }
    choices = {
        "greeting": list(SERVICES.items()),
        "ask_service": list(SERVICES.items()),
        "ask_day": list(DAYS.items()),
        "confirm": [("si", "Sí, confirmar"), ("no", "No, cambiar")],
    }

    # -- transitions ---------------------------------------------------------------------
    transitions = [
        {"trigger": "pick_service", "source": "service", "dest": "day", "say": "ask_day"},
        {"trigger": "pick_day", "source": "day", "dest": "confirm", "say": "confirm"},
        {"trigger": "book", "source": "confirm", "dest": "closed", "say": "booked",
         "reason": "booked"},
        {"trigger": "change", "source": "confirm", "dest": "service", "say": "ask_service"},
    ]
    reprompts = {"service": "ask_service", "day": "ask_day_again", "confirm": "confirm_again"}

    # -- steps ---------------------------------------------------------------------------
    def start(self, turn: Turn) -> Decision:
        """Greet, by name when WhatsApp tells us one, and offer the services."""
        name = f", {turn.profile_name}" if turn.profile_name else ""
        return turn.stay("greeting", saludo_nombre=name)

    @step("service")
    def pick_service(self, turn: Turn) -> Decision:
        """One of the services moves on to the days."""
        if turn.choice not in SERVICES:
            return turn.not_understood()
        turn.context["service"] = SERVICES[turn.choice]
        return turn.move("pick_service")

    @step("day")
    def pick_day(self, turn: Turn) -> Decision:
        """One of the days moves on to the confirmation."""
        if turn.choice not in DAYS:
            return turn.not_understood()
        turn.context["day"] = DAYS[turn.choice]
        return turn.move("pick_day")

    @step("confirm")
    def confirm(self, turn: Turn) -> Decision:
        """A yes books the turn; a no starts over from the service."""
        if turn.choice == "si" or turn.intent == "afirmacion":
            return turn.move("book")
        if turn.choice == "no" or turn.intent == "negacion":
            return turn.move("change")
        return turn.not_understood()
