"""The bottom layer: errors, data loading and the Dataset protocol, facts about the host.

Every other layer may import this one; it imports none of them.
"""
