"""latcomp studio: compose in the browser, live, on the serving engine path (`latcomp studio`).

app.py serves the page (static/, shipped in the package: no CDN, no build step) and one WebSocket per tab;
session.py holds a tab's layers and turns an edit into the layers the runtime composes; wire.py frames the
socket's messages. Edits go through the runtime's Batcher with the service's limits; nothing imports torch.
"""
