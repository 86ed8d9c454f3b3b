a=input()
b=int(a)
print(b*1)
print(b*2)
print(b*3)
c=b*4
print(c)
print(b*5)
