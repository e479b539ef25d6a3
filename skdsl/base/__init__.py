"""The ground floor every other package stands on, with no skdsl import of its own: the error
types and their rendering (errors), the one file read/write policy (files), the terminal's width
(terminal) and the launcher's environment (launch). Neither torch nor rich is imported here.
"""
