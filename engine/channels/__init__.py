"""Channel adapters: how messages reach users (WhatsApp through Twilio, or a terminal)."""
