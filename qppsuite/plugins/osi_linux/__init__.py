"""plugins/osi_linux"""
