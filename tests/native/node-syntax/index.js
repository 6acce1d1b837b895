// The syntax error below is on line 3: init must fail with Runtime.UserCodeSyntaxError naming index.js:3.

exports.handler = async (event) => { return {; };
