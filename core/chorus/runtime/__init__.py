"""The runtime: the registry built from configuration, request preparation, the agent loop, the
streaming relay, skillsets, parked turns and the knowledge service. Imports the contract, the plugin
manager, storage and networking; never the HTTP edge or the command line.
"""
