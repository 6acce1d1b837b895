# The syntax error below is on line 3: init must fail with Runtime.UserCodeSyntaxError naming app.py, line 3.

def handler(event, context)
    return {}
