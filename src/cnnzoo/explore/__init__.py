"""``cnnzoo explore``: a local web app that shows every layer, channel and neuron of a zoo model
on the user's image, with the computation of a clicked value written out (docs/explore.md).

:mod:`.engine` computes (no HTTP), :mod:`.app` is the ASGI app and its guard, :mod:`.session`
builds a session from the command line's options, :mod:`.cli` the command; the page is in
``static/`` (package data).
"""
