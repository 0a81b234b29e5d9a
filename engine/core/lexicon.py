"""The rioplatense vocabulary behind intent detection, as data.

Phrases are written as people type them; engine.core.phrasebook reads them as it reads a
message (folded, verb forms through engine.core.morphology), so "cancelalo",
"cancélelo" and "cancelámelo" in a message all meet the verb "cancelar" listed here.

A phrase has a strength:
- STRONG phrases count wherever they appear ("chau", "cancelá", "quiero probar").
- SOLO phrases are answers only when their clause holds nothing else but other phrases
  and fillers: "no" in "no, gracias" is a refusal, in "no me llegó el mail" it is not.
- REQUEST phrases are orders even inside a question ("¿me das de baja?").
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ABBREVIATIONS",
    "BRIDGES",
    "CLOSURE_MARKERS",
    "CUES",
    "DETERMINERS",
    "EMOJI",
    "FILLERS",
    "HEDGES",
    "INTENTS",
    "MENTIONS",
    "NAMING",
    "NEGATORS",
    "NEUTRAL",
    "NOT_TYPOS",
    "PAST_WORDS",
    "PRECEDENCE",
    "PROCLITICS",
    "REQUEST",
    "RETRACTIONS",
    "SIGN_OFFS",
    "SOLO",
    "STRONG",
    "TIME_GREETINGS",
    "VERBS",
    "VERB_SIGNALS",
]

INTENTS: tuple[str, ...] = (
    "saludo", "afirmacion", "negacion", "prueba", "despedida", "cancelacion",
)
# Highest first: a request to stop beats anything polite around it, and a
# "no, gracias, chau" is a goodbye rather than a mere refusal.
PRECEDENCE: tuple[str, ...] = (
    "cancelacion", "despedida", "prueba", "negacion", "afirmacion", "saludo",
)

# -- verbs -------------------------------------------------------------------------------
# lemma -> conjugation: "ar", "er", "ir", or a name in engine.core.morphology.IRREGULAR.
VERBS: Mapping[str, str] = {
    "cancelar": "ar", "dejar": "ar", "olvidar": "ar", "parar": "ar", "frenar": "ar",
    "continuar": "ar", "terminar": "ar", "finalizar": "ar", "anular": "ar", "abortar": "ar",
    "cortar": "ar", "borrar": "ar", "sacar": "ar", "eliminar": "ar", "mandar": "ar",
    "testear": "ar", "activar": "ar", "arrancar": "ar", "avanzar": "ar", "molestar": "ar",
    "suspender": "er", "escribir": "ir", "desuscribir": "ir", "seguir": "seguir",
    "salir": "salir", "probar": "probar",
    # Verbs with no intent of their own, listed so their forms are never "fixed" into
    # one that has: "pasame" is not a typo of "parame".
    "pasar": "ar", "pagar": "ar", "usar": "ar", "llamar": "ar", "hablar": "ar",
    "tomar": "ar", "cambiar": "ar", "contar": "ar", "esperar": "ar", "mirar": "ar",
    "pensar": "ar", "llegar": "ar", "buscar": "ar", "fijar": "ar", "anotar": "ar",
    "registrar": "ar", "consultar": "ar", "preguntar": "ar", "necesitar": "ar",
    "trabajar": "ar", "andar": "ar", "quedar": "ar", "avisar": "ar", "cobrar": "ar",
    "comprar": "ar", "contratar": "ar", "empezar": "ar", "explicar": "ar", "ayudar": "ar",
    "entrar": "ar", "cargar": "ar", "instalar": "ar", "descargar": "ar", "enviar": "ar",
    "manejar": "ar", "organizar": "ar", "controlar": "ar", "importar": "ar",
    "funcionar": "ar", "gustar": "ar", "encantar": "ar", "interesar": "ar",
    "faltar": "ar", "escuchar": "ar", "parecer": "er", "vender": "er", "perder": "er",
    "recibir": "ir", "vivir": "ir", "abrir": "ir", "decidir": "ir", "pedir": "ir",
}

# (lemma, mood) -> (intent, strength). Moods: inf, imp (any person, and the subjunctive
# a "no" takes: "no canceles"), pres1 ("lo cancelo"); "+me" when a "me" is attached.
VERB_SIGNALS: Mapping[tuple[str, str], tuple[str, str]] = {
    **{(verb, mood): ("cancelacion", "strong")
       for verb in ("cancelar", "olvidar", "frenar", "finalizar", "anular", "abortar",
                    "suspender", "desuscribir")
       for mood in ("inf", "inf+me", "imp", "imp+me", "imp1p")},
    # "borrame" asks to be removed; "borrá el mail anterior" does not.
    **{(verb, mood): ("cancelacion", "strong")
       for verb in ("borrar", "eliminar", "sacar") for mood in ("imp+me", "inf+me")},
    ("cancelar", "pres1"): ("cancelacion", "strong"),
    # "dejame ver" lets the user think; "dejalo", "dejá de escribirme" stop.
    ("dejar", "imp"): ("cancelacion", "strong"),
    ("dejar", "imp1p"): ("cancelacion", "strong"),
    # Only the accented "pará" is read as a verb; "para" stays a preposition.
    ("parar", "imp"): ("cancelacion", "strong"),
    ("parar", "imp+me"): ("cancelacion", "strong"),
    ("parar", "inf"): ("cancelacion", "solo"),
    ("cortar", "imp"): ("cancelacion", "strong"),
    ("cortar", "imp1p"): ("cancelacion", "strong"),
    # "la prueba termina el viernes": only "terminemos" (a phrase) and a lone "terminar".
    ("terminar", "inf"): ("cancelacion", "solo"),
    ("salir", "inf"): ("cancelacion", "solo"),
    **{("probar", mood): ("prueba", "strong") for mood in ("inf", "inf+me", "imp", "pres1")},
    **{("testear", mood): ("prueba", "strong") for mood in ("inf", "imp", "pres1")},
    ("seguir", "imp"): ("afirmacion", "solo"),
    ("seguir", "ind"): ("afirmacion", "solo"),
    ("seguir", "imp1p"): ("afirmacion", "solo"),
    ("arrancar", "imp1p"): ("afirmacion", "solo"),
    ("arrancar", "ind"): ("afirmacion", "solo"),
    ("avanzar", "imp"): ("afirmacion", "solo"),
}

# -- phrases -----------------------------------------------------------------------------

STRONG: Mapping[str, tuple[str, ...]] = {
    "saludo": (
        "hola", "holis", "holi", "holu", "hla", "alo", "hello", "hey", "wenas", "guenas",
        "que tal", "que onda", "como andas", "como andan", "como estas", "como estan",
        "como va", "como le va", "como les va", "como se encuentra", "que haces",
        "hola que haces", "buenas buenas", "muy buenos dias", "muy buenas tardes",
        "hola de nuevo", "todo tranqui", "como va eso", "como va todo",
    ),
    "afirmacion": (
        "dale", "de una", "por supuesto", "por supuestisimo", "de acuerdo",
        "estoy de acuerdo", "me parece bien", "me parece perfecto", "me parece genial",
        "claro que si", "obvio que si", "sisi", "mas vale", "no hay problema",
        "no hay drama", "sin problema", "trato hecho", "me prendo", "me anoto", "hagamoslo",
        "mandale", "dale nomas", "ni hablar", "por que no", "10 puntos",
        "una masa", "okey dokey",
    ),
    "negacion": (
        "no gracias", "no quiero", "no lo quiero", "no la quiero", "no me interesa",
        "no estoy interesado", "no estoy interesada", "para nada", "ni ahi", "ni a palos",
        "ni en pedo", "ni loco", "ni loca", "ni de casualidad", "de ninguna manera",
        "no me hace falta", "no hace falta", "no necesito", "no lo necesito",
        "estoy bien asi", "no me convence", "no me cierra", "no tengo interes",
        "no es necesario", "claro que no", "obvio que no", "creo que no",
        "me parece que no", "la verdad que no", "te dije que no", "ya te dije",
        "en otro momento", "otro dia sera", "no por ahora", "por ahora no", "ahora no",
        "hoy no", "todavia no", "aun no", "no todavia", "sin interes", "no te agradezco",
        "no le agradezco",
    ),
    "prueba": (
        "prueba", "pruebas", "pruebita", "demo", "trial", "free trial", "periodo de prueba",
        "version de prueba", "cuenta de prueba", "lo pruebo", "probemos", "probemoslo",
    ),
    "despedida": (
        "chau", "chao", "chaito", "chaucito", "ciao", "xau", "adios", "bye", "bai",
        "goodbye", "hasta luego", "hasta lueguito", "hasta pronto", "hasta la proxima",
        "hasta manana", "nos vemos", "nos hablamos", "hablamos despues",
        "despues hablamos", "nos estamos hablando", "seguimos en contacto",
        "me tengo que ir", "me quiero ir", "quiero irme", "me despido", "los dejo", "te dejo",
        "gracias por todo", "eso es todo", "eso era todo", "era eso nomas", "nada mas gracias",
        "que tengas buen dia", "que tengas un buen dia", "que tenga buen dia",
        "que tengan buen dia", "que tengas buena tarde", "que tengas buenas noches",
        "que tenga buenas noches", "que tengas lindo dia", "que tengas un lindo dia",
        "que tengan lindo dia", "que tengas buen fin de semana", "buen fin de semana",
        "lindo fin de semana", "que descanses", "que andes bien", "que estes bien",
        "que este bien", "que esten bien", "cuidate", "cuidense", "un saludo",
        "un saludo grande", "un abrazo", "abrazo", "besos", "beso", "besitos",
        "despues te escribo", "despues les escribo", "mas tarde te escribo",
        "cualquier cosa te escribo", "cualquier cosa les escribo",
        "cualquier cosa vuelvo a escribir", "despues vuelvo a escribir",
        "manana sigo", "despues sigo", "saludos cordiales",
    ),
    "cancelacion": (
        "cancelacion", "la cancelacion", "cancel", "basta", "stop", "unsubscribe",
        "ya es suficiente", "no sigas", "no sigan", "no siga", "no continues",
        "no continue", "no continuemos", "no quiero seguir", "no quiero continuar",
        "no deseo continuar", "no quiero mas", "ya no quiero", "ya no me interesa",
        "no me interesa seguir", "no me interesa continuar", "no me interesa mas",
        "me arrepenti", "cambie de idea", "cambie de opinion", "no me escribas mas",
        "no me escriban mas", "no me escriba mas", "no me mandes mas", "no me manden mas",
        "no me escribas", "no me escriban", "no me escriba", "no me mandes", "no me manden",
        "no me molestes mas", "no me molesten mas", "no me jodan mas",
        "ya no me escriban", "ya no me escribas", "ya no me manden", "ya no me mandes",
        "no quiero recibir mas mensajes", "no quiero que me escriban mas",
        "no quiero que me escribas mas", "no quiero que me escriban",
        "no quiero que me escribas", "no quiero que me manden", "borren mis datos",
        "borra mis datos", "borrar mis datos", "eliminen mis datos", "elimina mis datos",
        "borren mi numero", "dale de baja", "dame de baja", "deme de baja", "denme de baja",
        "darme de baja", "dar de baja", "den de baja", "quiero la baja", "no va mas",
        "hasta aca llegue", "dejame en paz", "dejenme en paz", "quiero salir",
        "me quiero salir", "salir de aca", "quiero terminar", "terminemos",
    ),
}

SOLO: Mapping[str, tuple[str, ...]] = {
    "saludo": ("ola", "hi", "ey", "eu"),
    "afirmacion": (
        "si", "sip", "sipi", "sep", "see", "yes", "ok", "oka", "okis", "vale", "esta bien",
        "ta bien", "bueno", "claro", "obvio", "exacto", "exactamente", "correcto", "asi es",
        "afirmativo", "eso", "eso mismo", "aja", "joya", "genial", "perfecto",
        "buenisimo", "barbaro", "excelente", "me interesa", "me copa", "me sirve", "me va",
        "quiero", "si quiero", "listo", "va", "vamos", "vamos con eso", "adelante",
        "hecho", "acepto", "confirmo", "me gustaria", "me encantaria", "todo bien",
        "si señor", "si señora", "re si",
    ),
    "negacion": (
        "no", "nop", "nopi", "nope", "nones", "nah", "na", "n", "paso", "yo paso",
        "negativo", "nunca", "en absoluto", "otro dia", "no da", "que no",
        "no señor", "no señora", "no che", "mas adelante",
    ),
    "despedida": ("me voy", "hablamos", "nada mas", "fin"),
    "cancelacion": ("suficiente", "ya no", "baja", "salir", "terminar", "cancel please",
                    "stop please"),
}

# Greetings that open a conversation, or close one after thanks ("gracias, buenas noches").
TIME_GREETINGS: tuple[str, ...] = (
    "buenas", "buen dia", "buenos dias", "buenas tardes", "buenas noches", "buen diaa",
)
# A sign-off when alone ("gracias, saludos"), a greeting beside one ("saludos, buen día").
SIGN_OFFS: tuple[str, ...] = ("saludos", "saludos y gracias")

# Orders even when asked: the bot is the one asked to act.
REQUEST: Mapping[str, tuple[str, ...]] = {
    "cancelacion": (
        "me das de baja", "me dan de baja", "me das de baja por favor", "me cancelas",
        "me cancelan", "me borras", "me borran", "me sacas", "me sacan",
        "podes cancelar", "podes cancelarlo", "podes cancelarla", "podrias cancelar",
        "pueden cancelar", "podrian cancelar", "puede cancelar",
    ),
}

# Words a solo answer may come with: "no, gracias", "sí, por favor", "dale nomás".
FILLERS: tuple[str, ...] = (
    "gracias", "muchas gracias", "mil gracias", "muchisimas gracias", "gracias igual",
    "che", "por favor", "nomas", "igual", "ya", "ah", "eh", "uh", "m", "mm", "jaja", "y",
    "pero", "entonces", "la verdad", "todo", "nada", "aca", "ahi", "asi", "mejor", "bien",
    "muy bien", "tambien", "senor", "senora", "amigo", "amiga", "capo", "genio", "chicos",
    "gente", "equipo", "bot", "a todos", "igualmente", "porfa", "please", "desde ya",
    "por ahora", "x ahora", "de nuevo", "otra vez", "hoy", "ahora", "todavia", "capaz",
    "quizas", "tal vez", "re", "super", "mucho", "yo", "vos", "usted", "ustedes",
    "te agradezco", "le agradezco", "se agradece", "se agradece mucho",
)

# Phrases that hold intent words but carry no intent of their own.
NEUTRAL: tuple[str, ...] = (
    "no se", "no se si", "no entiendo", "no entendi", "si no", "me voy a", "para que",
    "despues de la prueba", "termine la prueba", "termina la prueba", "durante la prueba",
    "pará un", "pará que", "pare un", "espero que estes bien", "espero que este bien",
    "no pasa nada", "no hay apuro", "no importa", "no me molesta", "no esta mal",
    "no sabia", "no tenia idea", "todo bien con",
    # "dejá que le pregunto": let, not stop.
    "deja que", "deje que", "dejen que",
)

# Phrases that make a clause a question for information, even without "?".
CUES: tuple[str, ...] = (
    "puedo", "se puede", "se pueden", "podria", "como", "cuando", "despues", "donde", "y si",
    "si no", "que pasa", "hay que", "cualquier momento", "tengo que", "si cancelo",
    "si me doy de baja", "hasta cuando", "a que hora",
)

# Phrases that introduce a name: what follows is an answer, not an order.
NAMING: tuple[str, ...] = (
    "se llama", "me llamo", "mi nombre es", "el nombre es", "mi apellido es",
    "trabajo en", "la empresa es", "mi empresa es", "mi local", "mi negocio es",
)

# Phrases that open a negation scope over the next intent phrase.
NEGATORS: frozenset[str] = frozenset({"no", "ni", "nunca", "tampoco"})
# Words that may stand between a negation and what it negates: "no quiero la prueba".
BRIDGES: frozenset[str] = frozenset({
    "me", "te", "lo", "la", "le", "los", "las", "les", "nos", "se", "el", "un", "una",
    "quiero", "queremos", "quiere", "queres", "ya", "mas", "voy", "vas", "va", "a", "nada",
    "tan", "de", "del", "por", "favor", "que", "deseo",
    # "no es para cancelar", "no quería cancelar", "ojalá no tenga que cancelar".
    "es", "era", "para", "queria", "quise", "quisiera", "quiera", "tenga", "tengo", "tener",
    "hay", "pienso", "pensaba",
})
# Words after which a closing word is named, not said: "antes de cancelar", "lo de
# cancelar", "ese chau era para otro chat", "sin darme de baja", "al cancelar".
MENTIONS: frozenset[str] = frozenset({"de", "del", "el", "ese", "este", "sin", "al"})
# Words that make what follows a possibility, not a request: "capaz cancele más adelante".
HEDGES: frozenset[str] = frozenset({"capaz", "quizas", "quiza", "ojala", "tal vez"})
PROCLITICS: frozenset[str] = frozenset({"me", "te", "se", "le", "les", "nos"})
# Words that open a subject: "el sistema cancela" states, it does not order.
DETERMINERS: frozenset[str] = frozenset({
    "el", "la", "los", "las", "mi", "tu", "su", "mis", "tus", "sus", "este", "esta",
})

# A user taking back what came before: "chau, perdón, quise decir hola".
RETRACTIONS: tuple[str, ...] = (
    "quise decir", "quise poner", "me equivoque de chat", "me equivoque de numero",
    "no era para vos", "no era para ustedes", "era para otro", "era para otra",
    "otro chat", "no le hagas caso", "no hagas caso", "ignora eso", "ignoralo",
)

# Words that make a clause a report of the past: "ayer cancelé", "dije chau sin querer".
PAST_WORDS: frozenset[str] = frozenset({
    "dije", "dijo", "dijeron", "dijiste", "puse", "pusieron", "ayer", "anoche", "pasado",
    "pasada", "habia", "habian", "hubo", "fue", "fui", "fuimos", "fueron",
    # Someone else's words: "mi socia dice que mejor cancelemos".
    "dice", "dicen",
})

# What ends a conversation when it comes with a "buenas noches" or a wave.
CLOSURE_MARKERS: frozenset[str] = frozenset({
    "gracias", "listo", "bueno", "ok", "dale", "perfecto", "genial", "joya",
})

# Emoji that are answers on WhatsApp; the rest are dropped with the punctuation.
EMOJI: Mapping[str, str] = {
    "👍": " ok ", "👌": " ok ", "✅": " ok ", "👎": " no ", "🙅": " no ", "🛑": " stop ",
    "⛔": " stop ", "👋": " 👋 ",
}

# WhatsApp abbreviations, folded; looked up as typed, then with repeated letters squeezed.
ABBREVIATIONS: Mapping[str, str] = {
    "q": "que", "k": "que", "xq": "porque", "pq": "porque", "porq": "porque",
    "x": "por", "tmb": "tambien", "tb": "tambien", "tbm": "tambien", "grax": "gracias",
    "grs": "gracias", "grcs": "gracias", "grasias": "gracias", "grasia": "gracias",
    "dsp": "despues", "dps": "despues", "nv": "nos vemos", "salu2": "saludos",
    "sluds": "saludos", "bss": "besos", "bso": "beso", "abz": "abrazo", "abzo": "abrazo",
    "porfi": "por favor", "porfa": "por favor", "plis": "por favor", "pls": "por favor",
    "xfa": "por favor", "xfavor": "por favor", "d": "de", "msj": "mensaje",
    "msjs": "mensajes", "ntp": "no te preocupes", "oki": "ok", "okey": "ok",
    "okay": "ok", "bnas": "buenas", "bn": "bien", "tqm": "te quiero mucho",
    "finde": "fin de semana", "nono": "no no",
}

# Real words one edit away from a vocabulary word: never "fix" them.
NOT_TYPOS: frozenset[str] = frozenset({
    "pagar", "pasar", "parir", "dejado", "vimos", "candela", "clara", "cancha", "carlos",
    "basto", "baste", "pasta", "vasto", "pruebe", "prueben", "probo", "parte", "partes",
    "para", "pare", "sale", "salio", "salga", "salgo", "hablo", "habla", "hablas",
    "hablan", "chaves", "chavez", "dejamos", "dejaron", "dejaste", "olvide", "olvido",
    "cancelado", "cancelada", "salida", "salido", "seguro", "segundo", "cuidado",
    "bastante", "holanda", "nombre", "nombres", "buenos", "dale", "vale", "valen",
    "listos", "lista", "claros", "claras", "obvia", "hecha", "chaulet", "saludo",
    "perfecta", "genia", "borro", "borre", "sacar", "saque", "corte", "corta", "corto",
    "paren", "pares", "parece", "parecen", "terminal", "terminos", "probable",
    "problema", "probablemente", "suspenso", "demora", "demore", "demoro", "semana",
    "tiempo", "baja", "bajar", "bajo", "abajo", "trabajo", "trabaja", "salas", "salinas",
    "paraná", "parana", "stopani", "cancela", "cancelo", "canela", "pruebo", "paso",
    "pasos", "paseo", "queso", "quiere", "quieres", "queres", "quien", "quienes",
    "quiera", "quieran", "quise", "quiso", "hola", "holas", "ola", "olas", "chau",
    "usar", "uso", "usas", "usan", "llamo", "llama", "llaman", "llamar", "llame",
    "pruebas", "proba", "probas", "siga", "sigan", "sigas", "sigo", "sigue", "siguen",
    "hasta", "vista", "visto", "fecha", "fechas", "basta", "bastan", "cuesta", "cuestan",
    "precio", "precios", "esta", "estas", "este", "estos", "estan", "esto", "ese", "esa",
    "eso", "vamos", "vemos", "venimos", "bien", "bueno", "buena", "buenas", "buen",
})
