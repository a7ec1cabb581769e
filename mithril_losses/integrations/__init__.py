"""Integrations with libraries whose models take output gradients from outside.

``mithril_losses.integrations.mithril`` drives a compiled Mithril model's
backward pass. No integration imports its library: each works on the objects
it is handed, so importing one costs nothing where the library is missing.
"""
