"""Who may change what. Everyone explores, selects, predicts and follows the teaching view;
launching or cancelling jobs and switching weights are the presenter's.

On loopback (the project's default address) the only person who can open the page is the
presenter. Served beyond loopback, those controls need the passphrase in $SNNET_PASSPHRASE; a
session that has not entered it sees them disabled, with one line saying why. The actions check
again on the server, since a disabled widget only binds an honest browser.
"""
import hmac
import ipaddress
import os
from typing import Optional

import streamlit as st

PASSPHRASE_VARIABLE = "SNNET_PASSPHRASE"
UNLOCKED = "presenter"


def is_loopback(address: Optional[str]) -> bool:
    """Whether a listening address keeps the server on this machine; unset means every interface."""
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def locked_reason(address: Optional[str], passphrase: Optional[str], unlocked: bool) -> Optional[str]:
    """None when this session may launch jobs and switch weights, else the one line that says why not."""
    if is_loopback(address) or unlocked:
        return None
    if not passphrase:
        return (f"Locked: this server is reachable from the network and no {PASSPHRASE_VARIABLE} is set, "
                "so no one can launch jobs or switch weights.")
    return "Locked for viewers: enter the presenter's passphrase in the sidebar to launch jobs or switch weights."


def lock() -> Optional[str]:
    """This session's lock: None (free), or the reason its controls are disabled."""
    return locked_reason(st.get_option("server.address"), os.environ.get(PASSPHRASE_VARIABLE),
                         st.session_state.get(UNLOCKED, False))


def passphrase_box() -> None:
    """The sidebar's passphrase field, shown only where a passphrase can unlock something."""
    passphrase = os.environ.get(PASSPHRASE_VARIABLE)
    if is_loopback(st.get_option("server.address")) or not passphrase or st.session_state.get(UNLOCKED):
        return
    entered = st.text_input("Presenter passphrase", type="password", key="passphrase",
                            help="Served beyond this machine: jobs and weights need the presenter's passphrase.")
    if entered:
        if hmac.compare_digest(entered.encode(), passphrase.encode()):
            st.session_state[UNLOCKED] = True
            st.rerun()
        st.error("Wrong passphrase.")
