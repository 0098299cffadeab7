"""core/devices"""
